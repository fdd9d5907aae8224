package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExitCodesAndMessages(t *testing.T) {
	dir := t.TempDir()
	badCfg := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badCfg, []byte("synth:\n  images: 3\n  colour: red\n"), 0o644)
	rangeCfg := filepath.Join(dir, "range.yaml")
	os.WriteFile(rangeCfg, []byte("synth:\n  classes: 40\n"), 0o644)
	okCfg := filepath.Join(dir, "ok.yaml")
	os.WriteFile(okCfg, []byte("synth:\n  images: 3\n  size: 48\n  seed: 5\n"), 0o644)
	out := filepath.Join(dir, "data")
	bad := filepath.Join(dir, "bad")
	os.MkdirAll(bad, 0o755)
	os.WriteFile(filepath.Join(bad, "classes.txt"), []byte("cat\ndog\n"), 0o644)
	os.WriteFile(filepath.Join(bad, "train_cls.txt"), []byte("img1 0\nimg2 7\n"), 0o644)

	tests := []struct {
		name string
		args []string
		code int
		want []string // substrings of stdout+stderr
	}{
		{"no command", nil, 2, []string{"Usage: l2gflow <command>"}},
		{"help", []string{"--help"}, 0, []string{"synth", "train", "label", "eval", "demo"}},
		{"unknown command", []string{"labl"}, 2, []string{`unknown command "labl"`}},
		{"command help", []string{"synth", "--help"}, 0, []string{"-images", "-config"}},
		{"bad flag", []string{"synth", "--imgs", "3"}, 2, []string{"imgs"}},
		{"bad flag value", []string{"synth", "--images", "many"}, 2, []string{"images"}},
		{"bad pcm value", []string{"train", "--data", bad, "--pcm=sometimes"}, 2, []string{"pcm", "true, false or auto"}},
		{"missing required", []string{"synth"}, 2, []string{"synth.out: required"}},
		{"unknown key in file", []string{"synth", "--config", badCfg, "--out", out}, 2, []string{"bad.yaml", "line 3", "colour"}},
		{"out of range in file", []string{"synth", "--config", rangeCfg, "--out", out}, 2, []string{"range.yaml", "synth.classes"}},
		{"flag overrides file", []string{"synth", "--config=" + rangeCfg, "--classes", "3", "--images", "2", "--size", "32", "--out", out}, 0, []string{"wrote 2 images", "3 classes"}},
		{"file values used", []string{"synth", "-config", okCfg, "--out", out}, 0, []string{"wrote 3 images", "long side 43-52 px"}},
		{"fixed size", []string{"synth", "-config", okCfg, "--fixed-size", "--out", out}, 0, []string{"wrote 3 images", "48x48"}},
		{"missing config file", []string{"synth", "--config", filepath.Join(dir, "nope.yaml")}, 2, []string{"nope.yaml"}},
		{"version", []string{"version"}, 0, []string{Version, "commit"}},
		{"train: bad class index", []string{"train", "--data", bad, "--out", filepath.Join(dir, "m.l2g"), "--steps", "1"}, 2, []string{"train_cls.txt:2", "outside 0..1"}},
		{"label: bad class index", []string{"label", "--data", bad, "--model", filepath.Join(dir, "m.l2g"), "--out", filepath.Join(dir, "o")}, 2, []string{"train_cls.txt:2", "outside 0..1"}},
		{"eval: bad class index", []string{"eval", "--data", bad, "--labels", filepath.Join(dir, "o"), "--report", filepath.Join(dir, "r")}, 2, []string{"train_cls.txt:2"}},
		{"label: missing tag list", []string{"label", "--data", bad, "--split", "val", "--model", filepath.Join(dir, "m.l2g"), "--out", filepath.Join(dir, "o")}, 2, []string{"val_cls.txt"}},
		{"eval: no labels in the folder", []string{"eval", "--data", out, "--labels", filepath.Join(dir, "lables"), "--report", filepath.Join(dir, "r"), "--in-process"}, 2, []string{"no labels found", "lables"}},
		{"pretrained needs a resnet", []string{"train", "--data", out, "--backbone", "tiny", "--pretrained", "w.safetensors", "--out", filepath.Join(dir, "m.l2g")}, 2, []string{"train.arch", "tiny has no pretrained counterpart"}},
		{"missing pretrained file", []string{"train", "--data", out, "--backbone", "resnet18", "--pretrained", filepath.Join(dir, "none.safetensors"), "--out", filepath.Join(dir, "m.l2g"), "--steps", "1"}, 1, []string{"pretrained", "none.safetensors"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr)
			all := stdout.String() + stderr.String()
			if code != tc.code {
				t.Errorf("exit %d, want %d; output:\n%s", code, tc.code, all)
			}
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("output does not contain %q:\n%s", w, all)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(out, "train_cls.txt")); err != nil {
		t.Errorf("synth wrote no tag list: %v", err)
	}
}
