package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/pprof/profile"
)

// TestLabelProfiles: label's --cpuprofile and --memprofile write profiles
// go tool pprof reads, the heap profile with the allocations of the run's
// inference (the backend's buffers).
func TestLabelProfiles(t *testing.T) {
	root, modelPath := labelFixture(t)
	dir := t.TempDir()
	cpu, mem := filepath.Join(dir, "cpu.prof"), filepath.Join(dir, "mem.prof")
	if code, out := cli(t, "label", "--model", modelPath, "--data", root, "--out", filepath.Join(dir, "labels"), "--in-process",
		"--cpuprofile", cpu, "--memprofile", mem); code != 0 {
		t.Fatalf("label: exit %d\n%s", code, out)
	}
	read := func(path string) *profile.Profile {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		p, err := profile.Parse(f)
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(path), err)
		}
		return p
	}
	if p := read(cpu); len(p.SampleType) == 0 || p.SampleType[len(p.SampleType)-1].Type != "cpu" || p.DurationNanos <= 0 {
		t.Errorf("cpu profile: sample types %v, duration %d ns", p.SampleType, p.DurationNanos)
	}
	p := read(mem)
	allocSpace := -1
	for i, st := range p.SampleType {
		if st.Type == "alloc_space" {
			allocSpace = i
		}
	}
	if allocSpace < 0 {
		t.Fatalf("heap profile without alloc_space: %v", p.SampleType)
	}
	var backend int64
	for _, s := range p.Sample {
		for _, loc := range s.Location {
			for _, line := range loc.Line {
				if strings.Contains(line.Function.Name, "gobackend.(*Backend).GetBuffer") {
					backend += s.Value[allocSpace]
				}
			}
		}
	}
	if backend == 0 {
		t.Error("the heap profile has no allocation of the backend's buffers")
	}
}
