package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/l2gflow/l2gflow/config"
)

// TestFlexTemplateParameters checks flex/metadata.json against the label
// command: every parameter is one of its flags, and the image's default
// arguments name the label command on Dataflow without waiting.
func TestFlexTemplateParameters(t *testing.T) {
	raw, err := os.ReadFile("../../flex/metadata.json")
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		Parameters  []struct {
			Name       string `json:"name"`
			Label      string `json:"label"`
			HelpText   string `json:"helpText"`
			IsOptional *bool  `json:"isOptional"`
		} `json:"parameters"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&meta); err != nil {
		t.Fatalf("metadata.json: %v", err)
	}
	cfg := config.Default()
	fs := flag.NewFlagSet("label", flag.ContinueOnError)
	labelCommand().bind(fs, &cfg)
	if meta.Name == "" || len(meta.Parameters) == 0 {
		t.Fatal("metadata.json has no name or parameters")
	}
	for _, p := range meta.Parameters {
		if fs.Lookup(p.Name) == nil {
			t.Errorf("template parameter %q is not a flag of l2gflow label", p.Name)
		}
		if p.Label == "" || p.HelpText == "" || p.IsOptional == nil {
			t.Errorf("template parameter %q lacks a label, help text or isOptional", p.Name)
		}
	}
	env := dockerfileEnv(t, "../../flex/Dockerfile", t.TempDir())
	if args := env[defaultArgsEnv]; !strings.HasPrefix(args, "label --runner=dataflow --async") ||
		!strings.Contains(args, "--worker_binary="+env["FLEX_TEMPLATE_GO_BINARY"]) {
		t.Errorf("flex/Dockerfile sets %s to %q: want the label command on Dataflow, not waiting, its binary the workers'", defaultArgsEnv, args)
	}
	got := withDefaultArgs([]string{"--model=gs://b/m.l2g", "--out=gs://b/o"}, "label --runner=dataflow --async")
	if strings.Join(got, " ") != "label --runner=dataflow --async --model=gs://b/m.l2g --out=gs://b/o" {
		t.Errorf("default arguments: %v", got)
	}
	if got := withDefaultArgs([]string{"eval", "--labels", "x"}, "label"); got[0] != "eval" {
		t.Errorf("a command line with a command took the default: %v", got)
	}
}

// TestLabelHelpGroupsFlags checks that label --help lists l2gflow's own
// flags first and Beam's ~58 pipeline options after them, as a group.
func TestLabelHelpGroupsFlags(t *testing.T) {
	code, out := cli(t, "label", "--help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	group := strings.Index(out, "Beam pipeline options")
	own := strings.Index(out, "-max-failures")
	beamFlag := strings.Index(out, "-staging_location")
	if group < 0 || own < 0 || beamFlag < 0 || !(own < group && group < beamFlag) {
		t.Errorf("l2gflow's flags, then Beam's as a group: positions %d, %d, %d\n%s", own, group, beamFlag, out)
	}
}
