package model

import (
	"runtime"
	"slices"
	"strings"
	"testing"
)

func TestCurrentPlatform(t *testing.T) {
	p := CurrentPlatform(testBackend(t))
	if p.OS != runtime.GOOS || p.Arch != runtime.GOARCH || p.GoMaxProcs < 1 {
		t.Errorf("platform %+v", p)
	}
	sets := []string{"go/avx512", "go/avx2", "go/portable"}
	if !slices.Contains(sets, p.Kernels) {
		t.Errorf("kernel set %q, want one of %v", p.Kernels, sets)
	}
	// The kernel set follows the features this process may use.
	if p.Kernels == "go/avx512" && !slices.Contains(p.Features, "avx512f") {
		t.Errorf("AVX-512 kernels without the avx512f feature: %+v", p)
	}
	if runtime.GOOS == "linux" && p.CPU == "" && !strings.HasPrefix(runtime.GOARCH, "arm") {
		t.Errorf("no CPU model read from /proc/cpuinfo")
	}
	t.Logf("%+v", p)
}
