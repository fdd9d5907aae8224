package transforms

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"

	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
)

// RunInProcess labels a dataset without Beam, for debugging and as the
// reference the pipeline is tested against: the same list reading, the
// same selection of pending images, the same stage methods (a group of
// images at a time on each core), the same dead-letter and index parts
// and the same last step (FinishRun), so its labels and records are those
// of the pipeline.
func RunInProcess(ctx context.Context, src dataset.Source, mode Existing, lo LabelOptions, ro RunOptions) (*RunRecord, error) {
	stages := NewStages(lo)
	defer stages.Close()
	st := stages.Store
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done, err := existing(ctx, st, lo.Out, ro.ModelSHA, mode)
	if err != nil {
		return nil, err
	}
	var (
		mu       sync.Mutex
		counts   = Counts{Failed: map[string]int64{}}
		deadPart = partWriter{dir: RunErrorsDir(ro.Out, ro.RunID), ext: ".jsonl"}
		idxPart  = indexParts(ro)
		firstErr error
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel()
	}
	outcome := func(o Outcome) { mu.Lock(); counts.Add(o); mu.Unlock() }
	dead := func(d DeadLetter) {
		mu.Lock()
		err := deadPart.add(ctx, st, deadLetterLine(d))
		counts.Add(Outcome{Kind: OutcomeFailed, ID: d.ID, Stage: d.Stage})
		mu.Unlock()
		if err != nil {
			fail(err)
		}
	}
	written := func(w Written) {
		mu.Lock()
		err := idxPart.add(ctx, st, []byte(w.ID))
		counts.Add(labelledOutcome(w))
		mu.Unlock()
		progress.Add(1)
		if err != nil {
			fail(err)
		}
	}
	groups := make(chan []dataset.Record)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for g := range groups {
				if err := labelGroup(ctx, stages, g, dead, written, outcome); err != nil {
					fail(err)
				}
			}
		}()
	}
	send := func(g []dataset.Record) error {
		select {
		case groups <- g:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var group []dataset.Record
	incremental := mode == Incremental
	readErr := EachRecord(ctx, st, src, func(rec dataset.Record, d *DeadLetter) error {
		switch {
		case d != nil:
			dead(*d)
		case skipRecord(done.labels[rec.ID], done.index[rec.ID], incremental):
			outcome(Outcome{Kind: OutcomeSkipped, ID: rec.ID})
		default:
			if group = append(group, rec); len(group) >= lo.group() {
				err := send(group)
				group = nil
				return err
			}
		}
		return ctx.Err()
	})
	if readErr == nil && len(group) > 0 {
		readErr = send(group)
	}
	close(groups)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if readErr != nil {
		return nil, readErr
	}
	if err := errors.Join(deadPart.flush(ctx, st), idxPart.flush(ctx, st)); err != nil {
		return nil, err
	}
	counts.Add(Outcome{Kind: OutcomeRun})
	return FinishRun(ctx, st, ro, counts)
}

// labelGroup runs a group of records through the stages.
func labelGroup(ctx context.Context, s *Stages, recs []dataset.Record, dead func(DeadLetter), written func(Written), outcome func(Outcome)) error {
	var tasks []*Task
	for _, r := range recs {
		t, d, err := s.Load(ctx, r)
		if err != nil {
			return err
		}
		if d != nil {
			dead(*d)
			continue
		}
		s.MakeViews(t)
		if err := s.LookupSaliency(ctx, t); err != nil {
			return err
		}
		tasks = append(tasks, t)
	}
	if len(tasks) == 0 {
		return nil
	}
	ok, failed, stats, err := s.Infer(ctx, tasks)
	if err != nil {
		return err
	}
	outcome(Outcome{Kind: OutcomeInfer, Infer: stats})
	for _, d := range failed {
		dead(d)
	}
	for _, t := range ok {
		lab, d, err := s.Fuse(ctx, t)
		if err != nil {
			return err
		}
		if d != nil {
			dead(*d)
			continue
		}
		w, err := s.Write(ctx, lab)
		if err != nil {
			return err
		}
		written(w)
	}
	return nil
}

// outputState is what one listing of OUT tells: the ids with a label and
// the ids this model's index lists.
type outputState struct {
	labels, index map[string]bool
}

// existing lists OUT once (and reads the model's index parts when
// incremental) for the in-process path's selection.
func existing(ctx context.Context, st *storage.Store, out, modelSHA string, mode Existing) (outputState, error) {
	s := outputState{labels: map[string]bool{}, index: map[string]bool{}}
	if mode == Overwrite {
		return s, nil
	}
	uris, err := st.List(ctx, out, "*")
	if err != nil {
		return s, err
	}
	idxDir := strings.TrimSuffix(storage.Join(out, IndexDir, modelSHA), "/")
	for _, u := range uris {
		if id, ok := LabelID(out, u); ok {
			s.labels[id] = true
			continue
		}
		if mode != Incremental || !strings.HasPrefix(u, idxDir+"/") || !strings.HasSuffix(u, ".txt") {
			continue
		}
		raw, err := st.ReadFile(ctx, u, 1<<30)
		if err != nil {
			return s, err
		}
		for _, id := range strings.Fields(string(raw)) {
			s.index[id] = true
		}
	}
	return s, nil
}

// EachRecord streams the source's list, parsing each line as the
// pipeline does, and calls fn with each record, or with a dead letter for
// a line that does not parse.
func EachRecord(ctx context.Context, st *storage.Store, src dataset.Source, fn func(dataset.Record, *DeadLetter) error) error {
	rc, err := st.Open(ctx, src.List)
	if err != nil {
		return err
	}
	defer rc.Close()
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 64*1024), dataset.MaxLineBytes)
	for sc.Scan() {
		line := sc.Text()
		rec, ok, err := src.Record(line)
		switch {
		case err != nil:
			id := strings.Fields(line + " ?")[0]
			err = fn(dataset.Record{}, &DeadLetter{ID: id, Stage: StageList, Reason: fmt.Sprintf("%s: %v", src.List, err)})
		case ok:
			err = fn(rec, nil)
		}
		if err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", src.List, err)
	}
	return nil
}
