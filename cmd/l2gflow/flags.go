package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/l2gflow/l2gflow/config"
)

// bindDataset registers the dataset flags shared by train, label and eval.
func bindDataset(fs *flag.FlagSet, d *config.Dataset) {
	fs.StringVar(&d.Root, "data", d.Root, "dataset `root` (local path or gs://bucket/prefix)")
	fs.StringVar(&d.Split, "split", d.Split, "split: reads ROOT/<split>_cls.txt")
	fs.StringVar(&d.Manifest, "manifest", d.Manifest, "JSON Lines manifest `file` instead of --data/--split")
	fs.IntVar(&d.MaxPixels, "max-pixels", d.MaxPixels, "refuse images larger than this many pixels")
}

// bindBackend registers --backend, the GoMLX backend of the commands that
// run a network.
func bindBackend(fs *flag.FlagSet, r *config.Runner) {
	fs.StringVar(&r.Backend, "backend", r.Backend, "GoMLX backend `configuration` (e.g. go:parallelism=-1)")
}

// bindVerbose registers --verbose, which shows the Beam runner's own log
// lines, for the commands that run a Beam job.
func bindVerbose(fs *flag.FlagSet, r *config.Runner) {
	fs.BoolVar(&r.Verbose, "verbose", r.Verbose, "show the Beam runner's own log lines")
}

// floatList is a flag.Value for comma-separated numbers.
type floatList struct{ p *[]float64 }

func (f floatList) String() string {
	if f.p == nil {
		return ""
	}
	parts := make([]string, len(*f.p))
	for i, v := range *f.p {
		parts[i] = fmt.Sprint(v)
	}
	return strings.Join(parts, ",")
}

func (f floatList) Set(s string) error {
	var out []float64
	for _, part := range strings.Split(s, ",") {
		var v float64
		if _, err := fmt.Sscan(strings.TrimSpace(part), &v); err != nil {
			return fmt.Errorf("%q is not a number", part)
		}
		out = append(out, v)
	}
	*f.p = out
	return nil
}
