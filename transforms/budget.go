package transforms

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/semaphore"
)

// Budget is a worker process's memory budget for labeling: each stage
// takes the bytes an image will need before it makes them (decoding,
// inference, fusion) and gives them back when done, so that concurrent
// bundles wait for each other instead of multiplying the memory. A share
// is taken whole, and never while holding another (a stage releases before
// the next stage takes), so nothing deadlocks; an image that needs more
// than the whole budget takes all of it and runs alone.
type Budget struct {
	total  int64
	source string
	sem    *semaphore.Weighted
	held   atomic.Int64
	peak   atomic.Int64
	// inferring bounds the parts of groups that hold decoded images for
	// inference at once to the batches the engine runs at once: a bundle
	// waiting for the engine holds its images compressed, not decoded.
	inferring *semaphore.Weighted
}

// NewBudget returns a budget of total bytes; source says where the figure
// came from (for the run record).
func NewBudget(total int64, source string) *Budget {
	total = max(total, 1)
	return &Budget{total: total, source: source, sem: semaphore.NewWeighted(total),
		inferring: semaphore.NewWeighted(int64(runtime.GOMAXPROCS(0)))}
}

// StartInference waits until a part of a group may decode its images and
// run them (as many at once as the engine runs batches), and returns the
// function that ends it.
func (b *Budget) StartInference(ctx context.Context) (func(), error) {
	if err := b.inferring.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	return func() { b.inferring.Release(1) }, nil
}

// Total is the budget in bytes.
func (b *Budget) Total() int64 { return b.total }

// Source says where the budget's figure came from.
func (b *Budget) Source() string { return b.source }

// Peak is the most bytes held at once so far.
func (b *Budget) Peak() int64 { return b.peak.Load() }

// Acquire takes n bytes (at most the whole budget), waiting until they are
// free, and returns what it took, to give back with Release.
func (b *Budget) Acquire(ctx context.Context, n int64) (int64, error) {
	n = min(max(n, 1), b.total)
	if err := b.sem.Acquire(ctx, n); err != nil {
		return 0, err
	}
	h := b.held.Add(n)
	for {
		p := b.peak.Load()
		if h <= p || b.peak.CompareAndSwap(p, h) {
			break
		}
	}
	return n, nil
}

// Release gives back n bytes taken by Acquire.
func (b *Budget) Release(n int64) {
	if n <= 0 {
		return
	}
	b.held.Add(-n)
	b.sem.Release(n)
}

// processBudgets are the worker process's budgets, one per setting (a
// job has one), shared by every bundle and stage (like the loaded
// engines, state of the process: Beam runs many DoFn instances in one
// worker).
var processBudgets = struct {
	sync.Mutex
	m map[int64]*Budget
}{m: map[int64]*Budget{}}

// BudgetFraction is the most of the memory available to the process that
// the automatic budget takes, and BudgetPerCore the most it takes per core
// (GOMAXPROCS): images are decoded and inferred about as many at a time as
// there are cores, so more would only let garbage pile up.
const (
	BudgetFraction = 0.5
	BudgetPerCore  = 1 << 30
)

// EngineAllowance is the memory the process's soft limit (GOMEMLIMIT)
// allows beyond the budget: the model, its compiled buckets and the
// batches running at once.
const EngineAllowance = 768 << 20

// ProcessBudget returns the process's budget for a setting, made on the
// first call (bytes; 0: BudgetFraction of the memory available to the
// process, its cgroup's limit or else the machine's memory, and at most
// BudgetPerCore a core). The first call also sets the Go runtime's soft
// memory limit (GOMEMLIMIT) to the budget and EngineAllowance (at most 85%
// of the available memory), unless the environment sets GOMEMLIMIT: the
// garbage collector then works to keep the process within what labeling
// needs instead of letting the heap grow to twice its live data.
func ProcessBudget(setting int64) *Budget {
	processBudgets.Lock()
	defer processBudgets.Unlock()
	if b := processBudgets.m[setting]; b != nil {
		return b
	}
	avail, where := AvailableMemory()
	total, source := setting, "label.memory_budget"
	if total <= 0 {
		cores := int64(runtime.GOMAXPROCS(0))
		total = min(int64(float64(avail)*BudgetFraction), cores*BudgetPerCore)
		source = fmt.Sprintf("the lesser of %.0f%% of %s (%d MiB) and %d MiB for each of %d cores", 100*BudgetFraction, where, avail>>20,
			BudgetPerCore>>20, cores)
	}
	if len(processBudgets.m) == 0 && os.Getenv("GOMEMLIMIT") == "" && avail > 0 {
		debug.SetMemoryLimit(min(total+EngineAllowance, int64(0.85*float64(avail))))
	}
	b := NewBudget(total, source)
	processBudgets.m[setting] = b
	return b
}

// AvailableMemory is the memory this process may use: its cgroup's limit
// (v2 memory.max, v1 memory.limit_in_bytes) when one is set, else the
// machine's memory (MemTotal); 4 GiB where neither can be read.
func AvailableMemory() (int64, string) {
	machine := int64(0)
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				if kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64); err == nil {
					machine = kb << 10
				}
			}
		}
		f.Close()
	}
	for _, p := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
		if err == nil && v > 0 && (machine == 0 || v < machine) {
			return v, "the cgroup's memory limit"
		}
	}
	if machine > 0 {
		return machine, "the machine's memory"
	}
	return 4 << 30, "an assumed 4 GiB (no memory figure readable)"
}
