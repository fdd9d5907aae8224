package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestExampleLoadsAndValidates(t *testing.T) {
	cfg, err := Load("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(SectionDataset | SectionSynth | SectionTrain | SectionLabel | SectionEval | SectionRunner); err != nil {
		t.Fatalf("example.yaml does not validate: %v", err)
	}
	// The example documents the defaults: apart from the paths it sets,
	// it must equal them.
	def := Default()
	def.Dataset.Root, def.Synth.Out, def.Label.Model, def.Label.Out = "./data", "./data", "model.l2g", "./labels"
	def.Eval.Labels, def.Eval.Report = "./labels", "./report"
	if !reflect.DeepEqual(cfg, def) {
		t.Errorf("example.yaml differs from Default():\n got %+v\nwant %+v", cfg, def)
	}
}

func TestEmptyFileGivesDefaults(t *testing.T) {
	cfg, err := Parse("empty.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("empty config differs from defaults")
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key", "train:\n  lr: 0.1\n  learning_rate: 3\n", []string{"bad.yaml", "line 3", "learning_rate"}},
		{"unknown section", "trian:\n  lr: 1\n", []string{"line 1", "trian"}},
		{"wrong type", "train:\n  views: six\n", []string{"line 2", "six"}},
		{"pcm neither boolean nor auto", "train:\n  pcm: sometimes\n", []string{"line 2", "sometimes", "auto"}},
		{"not yaml", "train: [\n", []string{"bad.yaml"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	all := SectionDataset | SectionSynth | SectionTrain | SectionLabel | SectionEval | SectionRunner
	valid := func() Config {
		c := Default()
		c.Dataset.Root, c.Synth.Out, c.Label.Model, c.Label.Out, c.Eval.Labels = "d", "d", "m", "o", "o"
		return c
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		key    string
	}{
		{"root and manifest", func(c *Config) { c.Dataset.Manifest = "m.jsonl" }, "dataset.manifest"},
		{"no input", func(c *Config) { c.Dataset.Root = "" }, "dataset.root"},
		{"view larger than image", func(c *Config) { c.Train.ViewSize = 256 }, "train.view_size"},
		{"view not multiple of stride", func(c *Config) { c.Train.ViewSize = 100 }, "train.view_size"},
		{"bad stride", func(c *Config) { c.Train.OutputStride = 4 }, "train.output_stride"},
		{"too few views for corners", func(c *Config) { c.Train.Views = 3 }, "train.views"},
		{"unknown method", func(c *Config) { c.Train.Method = "irn" }, "train.method"},
		{"unknown arch", func(c *Config) { c.Train.Arch = "vgg" }, "train.arch"},
		{"empty pcm", func(c *Config) { c.Train.PCM = "" }, "train.pcm"},
		{"negative lr", func(c *Config) { c.Train.LR = -1 }, "train.lr"},
		{"no budget", func(c *Config) { c.Train.Epochs = 0 }, "train.epochs"},
		{"bad time budget", func(c *Config) { c.Train.TimeBudget = "soon" }, "train.time_budget"},
		{"bg threshold > 1", func(c *Config) { c.Label.BgThreshold = 1.5 }, "label.bg_threshold"},
		{"no scales", func(c *Config) { c.Label.Scales = nil }, "label.scales"},
		{"scale zero", func(c *Config) { c.Label.Scales = []float64{1, 0} }, "label.scales[1]"},
		{"unknown background", func(c *Config) { c.Label.Background = "crf" }, "label.background"},
		{"sweep reversed", func(c *Config) { c.Eval.SweepTo = c.Eval.SweepFrom / 2 }, "eval.sweep_to"},
		{"synth classes", func(c *Config) { c.Synth.Classes = 1 }, "synth.classes"},
		{"synth size", func(c *Config) { c.Synth.Size = 8 }, "synth.size"},
		{"backend", func(c *Config) { c.Runner.Backend = "" }, "runner.backend"},
	}
	if err := func() *Config { c := valid(); return &c }().Validate(all); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.mutate(&c)
			err := c.Validate(all)
			if err == nil || !strings.Contains(err.Error(), tc.key+":") {
				t.Errorf("err = %v, want one naming %s", err, tc.key)
			}
		})
	}
	// Sections not asked for are not checked.
	c := Default()
	if err := c.Validate(SectionTrain); err != nil {
		t.Errorf("train section of the defaults: %v", err)
	}
}

// TestReferenceLoadsAndValidates checks config/reference.yaml: it
// validates (with a weights file and paths given, as a command line would)
// and sets what
// the official L2G code uses.
func TestReferenceLoadsAndValidates(t *testing.T) {
	cfg, err := Load("reference.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Train.Pretrained = "resnet50.safetensors"
	cfg.Label.Model, cfg.Label.Out, cfg.Eval.Labels = "model.l2g", "labels", "labels"
	if err := cfg.Validate(SectionTrain | SectionLabel | SectionEval); err != nil {
		t.Fatalf("reference.yaml does not validate: %v", err)
	}
	tr := cfg.Train
	if tr.ImageSize != 448 || tr.ViewSize != 320 || tr.Views != 6 || tr.LR != 0.001 || tr.BatchSize != 3 || tr.GlobalClsWeight != 0 ||
		!tr.FreezeBN || tr.PCM != True || cfg.Label.BgThreshold != 0.25 || cfg.Label.BgThresholdFrom != "fixed" {
		t.Errorf("reference settings: %+v, label %+v", tr, cfg.Label)
	}
}
