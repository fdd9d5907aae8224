package main

import (
	"fmt"
	"io"
	"time"
)

// progress prints a line on stderr at most once a second: count, rate and
// ETA. It is for one goroutine at a time (callers serialise updates).
type progress struct {
	w          io.Writer
	what       string
	total      int
	start      time.Time
	last       time.Time
	done       int
	terminated bool
}

func newProgress(w io.Writer, what string, total int) *progress {
	now := time.Now()
	return &progress{w: w, what: what, total: total, start: now, last: now}
}

func (p *progress) update(done int) {
	p.done = done
	if now := time.Now(); now.Sub(p.last) >= time.Second || done == p.total {
		p.last = now
		p.print()
	}
}

func (p *progress) print() {
	el := time.Since(p.start).Seconds()
	rate := float64(p.done) / max(el, 1e-9)
	eta := "?"
	if rate > 0 {
		eta = (time.Duration(float64(p.total-p.done)/rate) * time.Second).Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "%s: %d/%d (%.0f%%), %.1f/s, ETA %s\n", p.what, p.done, p.total, 100*float64(p.done)/float64(max(p.total, 1)), rate, eta)
}

func (p *progress) finish() {
	if p.done != p.total && !p.terminated {
		p.print()
	}
	p.terminated = true
}
