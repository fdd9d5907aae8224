package label

import (
	"context"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Measure is one timed labeling run.
type Measure struct {
	Mode         string  `json:"mode"` // "in-process" or a runner name
	Images       int64   `json:"images"`
	Seconds      float64 `json:"seconds"`
	ImagesPerSec float64 `json:"images_per_sec"`
	Cores        float64 `json:"cores"`        // CPU time / wall time
	PeakHeapMB   float64 `json:"peak_heap_mb"` // sampled Go heap in use (live data and garbage)
	PeakLiveMB   float64 `json:"peak_live_mb"` // sampled live heap as of each GC
	PeakRSSMB    float64 `json:"peak_rss_mb"`  // sampled resident set
	StartRSSMB   float64 `json:"start_rss_mb"` // resident set before the run
}

// Measured runs a labeling run (always with --overwrite semantics, so that
// every image is processed) and measures its rate, the cores it kept busy
// and its peak memory.
func Measured(ctx context.Context, o Options) (Measure, error) {
	o.Label.Overwrite = true
	runtime.GC()
	m := Measure{Mode: o.Runner, StartRSSMB: rssMB()}
	if o.InProcess {
		m.Mode = "in-process"
	} else if m.Mode == "" {
		m.Mode = "prism"
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		for {
			runtime.ReadMemStats(&ms)
			m.PeakHeapMB = max(m.PeakHeapMB, float64(ms.HeapInuse)/(1<<20))
			metrics.Read(live)
			if live[0].Value.Kind() == metrics.KindUint64 {
				m.PeakLiveMB = max(m.PeakLiveMB, float64(live[0].Value.Uint64())/(1<<20))
			}
			m.PeakRSSMB = max(m.PeakRSSMB, rssMB())
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	start, cpu0 := time.Now(), cpuSeconds()
	rec, err := Run(ctx, o)
	wall, cpu := time.Since(start).Seconds(), cpuSeconds()-cpu0
	close(done)
	wg.Wait()
	if err != nil {
		return m, err
	}
	m.Images, m.Seconds = rec.Record.Counts.LabelsWritten, wall
	m.ImagesPerSec = float64(m.Images) / wall
	m.Cores = cpu / wall
	return m, nil
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// rssMB reads the resident set size from /proc (0 where unavailable).
func rssMB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
