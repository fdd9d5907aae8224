package model

import (
	"bufio"
	"os"
	"runtime"
	"strings"

	"github.com/gomlx/compute"
	"github.com/gomlx/compute/gobackend"
	"golang.org/x/sys/cpu"
)

// Platform describes the machine a computation ran on, as far as it can
// change the results: the compute kernels round floating-point sums
// differently on different CPU families (see KernelSet).
type Platform struct {
	OS   string `json:"os"`
	Arch string `json:"arch"`
	// CPU is the processor's model name ("" where it cannot be read).
	CPU string `json:"cpu,omitempty"`
	// Features lists the vector extensions the CPU offers and the process
	// may use (a GODEBUG=cpu.avx512f=off removes avx512f).
	Features []string `json:"features"`
	// Kernels is the backend's kernel set (KernelSet).
	Kernels    string `json:"kernels"`
	GoMaxProcs int    `json:"gomaxprocs"`
}

// KernelSet names the compute kernels a backend runs (nil: the Go
// backend's): for the Go backend of the fork "go/avx512", "go/avx2" or
// "go/portable" (its KernelSet method), for a backend that cannot say the
// backend's name. Labels are the same to the bit between machines of one
// kernel set and within float tolerance between sets. The method is asked
// for through an interface so that the model also builds and trains on
// an upstream backend without it.
func KernelSet(b compute.Backend) string {
	if b == nil {
		b = gobackend.GetBackend()
	}
	if k, ok := b.(interface{ KernelSet() string }); ok {
		return b.String() + "/" + k.KernelSet()
	}
	return b.String()
}

// CurrentPlatform describes this process's machine, with the kernels of
// backend b (nil: the Go backend's).
func CurrentPlatform(b compute.Backend) Platform {
	p := Platform{OS: runtime.GOOS, Arch: runtime.GOARCH, CPU: cpuModel(), Kernels: KernelSet(b),
		GoMaxProcs: runtime.GOMAXPROCS(0), Features: []string{}}
	switch runtime.GOARCH {
	case "amd64":
		for _, f := range []struct {
			name string
			has  bool
		}{{"avx512f", cpu.X86.HasAVX512F}, {"avx2", cpu.X86.HasAVX2}, {"fma", cpu.X86.HasFMA}} {
			if f.has {
				p.Features = append(p.Features, f.name)
			}
		}
	case "arm64":
		if cpu.ARM64.HasASIMD {
			p.Features = append(p.Features, "asimd")
		}
	}
	return p
}

// cpuModel reads the processor's model name from /proc/cpuinfo (Linux).
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
