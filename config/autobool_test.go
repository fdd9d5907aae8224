package config

import (
	"encoding/json"
	"flag"
	"testing"
)

// TestUsePCM resolves every value of train.pcm under both methods: auto
// gives L2G the module and leaves the CAM baseline without it.
func TestUsePCM(t *testing.T) {
	tests := []struct {
		pcm    AutoBool
		method string
		want   bool
	}{
		{Auto, "l2g", true},
		{Auto, "cam", false},
		{True, "l2g", true},
		{True, "cam", true},
		{False, "l2g", false},
		{False, "cam", false},
		{"", "l2g", true}, // unset reads as auto (validation refuses it in a file)
	}
	for _, tc := range tests {
		tr := Train{PCM: tc.pcm, Method: tc.method}
		if got := tr.UsePCM(); got != tc.want {
			t.Errorf("pcm %q, method %s: UsePCM() = %v, want %v", tc.pcm, tc.method, got, tc.want)
		}
		r := tr.Resolved()
		if want := map[bool]AutoBool{true: True, false: False}[tc.want]; r.PCM != want || r.UsePCM() != tc.want {
			t.Errorf("pcm %q, method %s: Resolved().PCM = %q, want %q", tc.pcm, tc.method, r.PCM, want)
		}
	}
	if d := Default().Train; d.PCM != Auto || !d.UsePCM() {
		t.Errorf("default train.pcm %q (UsePCM %v), want auto (true with l2g)", d.PCM, d.UsePCM())
	}
}

// TestAutoBoolReads reads the setting from YAML, JSON (results written
// when it was a plain boolean included) and flags.
func TestAutoBoolReads(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want AutoBool
	}{{"true", True}, {"false", False}, {"auto", Auto}, {`"true"`, True}} {
		cfg, err := Parse("c.yaml", []byte("train:\n  pcm: "+tc.yaml+"\n"))
		if err != nil || cfg.Train.PCM != tc.want {
			t.Errorf("yaml pcm: %s: got %q, %v; want %q", tc.yaml, cfg.Train.PCM, err, tc.want)
		}
	}
	for _, tc := range []struct {
		json string
		want AutoBool
	}{{"true", True}, {"false", False}, {`"auto"`, Auto}, {`"false"`, False}} {
		var tr Train
		if err := json.Unmarshal([]byte(`{"PCM":`+tc.json+`}`), &tr); err != nil || tr.PCM != tc.want {
			t.Errorf("json PCM %s: got %q, %v; want %q", tc.json, tr.PCM, err, tc.want)
		}
	}
	for _, bad := range []string{`"maybe"`, "1.5"} {
		var tr Train
		if err := json.Unmarshal([]byte(`{"PCM":`+bad+`}`), &tr); err == nil {
			t.Errorf("json PCM %s accepted as %q", bad, tr.PCM)
		}
	}
	for _, tc := range []struct {
		args []string
		want AutoBool
	}{
		{nil, Auto},
		{[]string{"--pcm"}, True},
		{[]string{"--pcm=false"}, False},
		{[]string{"--pcm=auto"}, Auto},
		{[]string{"--pcm=true"}, True},
	} {
		fs := flag.NewFlagSet("train", flag.ContinueOnError)
		v := Auto
		fs.Var(&v, "pcm", "")
		if err := fs.Parse(tc.args); err != nil || v != tc.want {
			t.Errorf("flags %q: got %q, %v; want %q", tc.args, v, err, tc.want)
		}
	}
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.SetOutput(new(discard))
	v := Auto
	fs.Var(&v, "pcm", "")
	if err := fs.Parse([]string{"--pcm=sometimes"}); err == nil {
		t.Errorf("--pcm=sometimes accepted as %q", v)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
