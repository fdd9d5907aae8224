package label

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"reflect"
	"strconv"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/options/gcpopts"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners/dataflow/dataflowlib"
	df "google.golang.org/api/dataflow/v1b3"

	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/transforms"
)

// reflectNil reports whether an interface holds a nil pointer (the
// Dataflow runner returns one when it writes a template).
func reflectNil(v any) bool {
	r := reflect.ValueOf(v)
	return r.Kind() == reflect.Pointer && r.IsNil()
}

// beamFlag returns the value of one of Beam's global flags ("" if none).
func beamFlag(name string) string {
	if f := flag.Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}

func beamFlagTrue(name string) bool {
	v, _ := strconv.ParseBool(beamFlag(name))
	return v
}

// Submission is written to OUT/_runs/<run>.submitted.json when a job is
// handed to Dataflow without waiting: where to follow it. The job itself
// writes OUT/_runs/<run>.json when it ends.
type Submission struct {
	RunID     string    `json:"run_id"`
	Job       string    `json:"job"`
	Console   string    `json:"console"`
	Submitted time.Time `json:"submitted"`
}

// executeDataflow submits the job to Dataflow. With --async, or when
// writing a template (--template_location), it returns at once with where
// to follow the job; otherwise it follows the job itself, printing
// progress from the job's metrics, and reads the run record the job
// wrote.
func (p *Plan) executeDataflow(ctx context.Context) (*Result, error) {
	o := p.Options
	template := beamFlag("template_location")
	wait := !beamFlagTrue("async") && !beamFlagTrue("execute_async") && template == "" && !beamFlagTrue("dry_run")
	if wait {
		// Submit without the runner's own wait, and wait here, where the
		// job's metrics give progress.
		prev := beamFlag("async")
		if err := flag.Set("async", "true"); err != nil {
			return nil, err
		}
		defer flag.Set("async", prev)
	}
	pipe, s := beam.NewPipelineWithRoot()
	p.Build(s)
	res, err := beam.Run(ctx, "dataflow", pipe)
	if err != nil {
		return nil, fmt.Errorf("pipeline on dataflow: %w", err)
	}
	switch {
	case template != "":
		return &Result{Detached: true, Template: template}, nil
	case beamFlagTrue("dry_run"):
		return &Result{Detached: true}, nil
	}
	id := jobID(res)
	if id == "" {
		return nil, errors.New("dataflow: the runner returned no job id")
	}
	project, region := gcpopts.GetProjectFromFlagOrEnvironment(ctx), gcpopts.GetRegion(ctx)
	out := &Result{Job: id, Console: fmt.Sprintf("https://console.cloud.google.com/dataflow/jobs/%s/%s?project=%s", region, id, project)}
	o.logf("label: Dataflow job %s submitted; console %s", id, out.Console)
	if !wait {
		out.Detached = true
		st := storage.NewWith(o.Storage)
		defer st.Close()
		raw, _ := json.MarshalIndent(Submission{RunID: p.Run.RunID, Job: id, Console: out.Console, Submitted: time.Now().UTC()}, "", "  ")
		uri := storage.Join(p.Run.Out, transforms.RunsDir, p.Run.RunID+".submitted.json")
		if err := st.WriteFile(ctx, uri, append(raw, '\n')); err != nil {
			return out, fmt.Errorf("record the submission: %w", err)
		}
		return out, nil
	}
	state, err := p.followDataflow(ctx, project, region, id)
	if err != nil {
		return out, err
	}
	rec, rerr := p.readRecord(ctx)
	switch {
	case state == "JOB_STATE_DONE" && rerr == nil:
		out.Record = rec
		return out, nil
	case rerr == nil && rec.TooManyFailures:
		out.Record = rec
		return out, tooMany(rec)
	case state == "JOB_STATE_DONE":
		return out, rerr
	}
	return out, fmt.Errorf("dataflow job %s ended %s; see %s", id, state, out.Console)
}

// followDataflow polls a Dataflow job until it ends, printing the labels
// written so far (the job's l2gflow/labels_written metric) every
// ProgressEvery. It returns the job's final state.
func (p *Plan) followDataflow(ctx context.Context, project, region, id string) (string, error) {
	o := p.Options
	client, err := dataflowlib.NewClient(ctx, beamFlag("dataflow_endpoint"))
	if err != nil {
		return "", fmt.Errorf("dataflow client: %w", err)
	}
	every := o.ProgressEvery
	if every <= 0 {
		every = 30 * time.Second
	}
	start := time.Now()
	for {
		j, err := client.Projects.Locations.Jobs.Get(project, region, id).Context(ctx).Do()
		if err != nil {
			return "", fmt.Errorf("dataflow job %s: %w", id, err)
		}
		if m, err := client.Projects.Locations.Jobs.GetMetrics(project, region, id).Context(ctx).Do(); err == nil {
			o.logf("label: %s: %s", j.CurrentState, progressLine(labelsWritten(m), int64(p.Info.Listed), time.Since(start)))
		}
		switch j.CurrentState {
		case "JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_DRAINED", "JOB_STATE_UPDATED":
			return j.CurrentState, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("stopped following dataflow job %s (it goes on; cancel it in the console): %w", id, ctx.Err())
		case <-time.After(every):
		}
	}
}

// labelsWritten sums the job's committed l2gflow/labels_written counter.
func labelsWritten(m *df.JobMetrics) int64 {
	var n int64
	for _, u := range m.Metrics {
		if u.Name == nil || u.Name.Origin != "user" || u.Name.Name != transforms.MetricLabelsWritten ||
			u.Name.Context["namespace"] != transforms.MetricsNamespace || u.Name.Context["tentative"] == "true" {
			continue
		}
		var v float64
		if json.Unmarshal(scalarJSON(u.Scalar), &v) == nil {
			n += int64(v)
		}
	}
	return n
}

// scalarJSON returns a metric's scalar as JSON.
func scalarJSON(v any) []byte {
	raw, _ := json.Marshal(v)
	return raw
}
