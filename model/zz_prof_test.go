package model

import (
	"os"
	"runtime/pprof"
	"testing"
	"time"
)

func TestZZProfileWorkload(t *testing.T) {
	name := os.Getenv("WL")
	if name == "" {
		t.Skip()
	}
	for _, w := range Workloads() {
		if w.Name != name && !contains(w.Name, name) {
			continue
		}
		backend := testBackend(t)
		iter, err := w.prepare(backend)
		if err != nil {
			t.Fatal(err)
		}
		iter()
		f, _ := os.Create("/tmp/wl.prof")
		pprof.StartCPUProfile(f)
		start := time.Now()
		n := 0
		for time.Since(start) < 6*time.Second {
			iter()
			n++
		}
		pprof.StopCPUProfile()
		f.Close()
		t.Logf("%s: %d iterations, %v each", w.Name, n, time.Since(start)/time.Duration(n))
		return
	}
}

func contains(s, sub string) bool { return len(sub) > 0 && len(s) >= len(sub) && (s == sub || indexOf(s, sub) >= 0) }
func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}
