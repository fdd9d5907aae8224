package transforms

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/model"
	"github.com/l2gflow/l2gflow/model/maps"
)

func TestEncodeMapRoundTrip(t *testing.T) {
	m := maps.New(3, 4, 2)
	for i := range m.Pix {
		m.Pix[i] = float32(i)*0.25 - 1
	}
	back, err := DecodeMap(EncodeMap(m))
	if err != nil || back.H != 3 || back.W != 4 || back.C != 2 || !slices.Equal(back.Pix, m.Pix) {
		t.Errorf("round trip: %+v, %v", back, err)
	}
	if _, err := DecodeMap([]byte("not zstd")); err == nil {
		t.Error("garbage: want an error")
	}
	if _, err := DecodeMap(zenc.EncodeAll([]byte{1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0}, nil)); err == nil {
		t.Error("header without values: want an error")
	}
}

func TestMakeViews(t *testing.T) {
	st := &Stages{Opts: LabelOptions{Views: model.ViewOptions{Scales: []float64{0.5, 1, 1.5, 2}, Flip: true}}}
	task := &Task{W: 40, H: 30}
	st.MakeViews(task)
	if len(task.Views) != 8 {
		t.Fatalf("%d views, want 8", len(task.Views))
	}
	for i, v := range task.Views {
		if v.Index != i || v.Flip != (i%2 == 1) || v.Of != 8 {
			t.Errorf("view %d: %+v", i, v)
		}
	}
	st.Opts.Views = model.ViewOptions{Scales: []float64{1}, LocalViews: "corners", LocalSize: 20}
	st.MakeViews(task)
	if len(task.Views) != 5 || !task.Views[4].Local || task.Views[4].Y0 != 10 || task.Views[4].X0 != 20 {
		t.Errorf("corner views: %+v", task.Views)
	}
}

func TestLookupSaliency(t *testing.T) {
	st := NewStages(LabelOptions{Fuse: FuseOptions{Background: BackgroundSaliency}})
	defer st.Close()
	ctx := context.Background()
	dir := t.TempDir()
	good, _ := imagefile.EncodeGray(imagefile.NewGray(4, 3))
	small, _ := imagefile.EncodeGray(imagefile.NewGray(2, 2))
	st.Store.WriteFile(ctx, filepath.Join(dir, "good.png"), good)
	st.Store.WriteFile(ctx, filepath.Join(dir, "small.png"), small)
	st.Store.WriteFile(ctx, filepath.Join(dir, "bad.png"), []byte("junk"))
	for _, tc := range []struct {
		uri    string
		probe  bool
		needed bool
		want   string
	}{
		{filepath.Join(dir, "good.png"), false, true, SalOK},
		{filepath.Join(dir, "good.png"), false, false, SalNotNeeded},
		{"", false, true, SalNone},
		{filepath.Join(dir, "gone.png"), false, true, SalMissing},
		{filepath.Join(dir, "gone.png"), true, true, SalNone}, // the layout has no map for it
		{filepath.Join(dir, "small.png"), false, true, SalWrongSize},
		{filepath.Join(dir, "bad.png"), false, true, SalUnreadable},
	} {
		st.Opts.Fuse.Background = BackgroundThreshold
		if tc.needed {
			st.Opts.Fuse.Background = BackgroundSaliency
		}
		task := &Task{W: 4, H: 3}
		task.Rec.Saliency, task.Rec.Probe = tc.uri, tc.probe
		if err := st.LookupSaliency(ctx, task); err != nil {
			t.Fatal(err)
		}
		if task.SalStatus != tc.want || (tc.want == SalOK) != (len(task.SalFile) > 0) {
			t.Errorf("%s needed=%v: status %q (%d bytes kept), want %q", tc.uri, tc.needed, task.SalStatus, len(task.SalFile), tc.want)
		}
	}
}

// twoViewTask is a 2x2 image with one class and two views whose CAMs peak
// on pixel 0.
func twoViewTask(a, b float32) *Task {
	t := &Task{W: 2, H: 2, SalStatus: SalNone}
	t.Rec.ID, t.Rec.Tags = "a", []int{0}
	for i, v := range []float32{a, b} {
		m := maps.New(2, 2, 1)
		for k := range m.Pix {
			m.Pix[k] = v
		}
		m.Pix[0] = 2 * v
		t.Views = append(t.Views, model.ViewSpec{Index: i, Scale: 1, InH: 2, InW: 2, Of: 2})
		t.CAMs = append(t.CAMs, *m)
	}
	return t
}

func TestFuse(t *testing.T) {
	st := &Stages{Opts: LabelOptions{Fuse: FuseOptions{Classes: 1, Background: BackgroundThreshold, BgThreshold: 0.6, KeepCAMs: true}}}
	ctx := context.Background()
	lab, d, err := st.Fuse(ctx, twoViewTask(1, 0.5))
	if err != nil || d != nil || lab.CAM == nil || lab.Views != 2 {
		t.Fatalf("fuse: %+v %+v", lab, d)
	}
	g, _ := imagefile.DecodeLabel(lab.PNG, 0)
	if !slices.Equal(g.Pix, []uint8{1, 0, 0, 0}) {
		t.Errorf("label %v, want [1 0 0 0]", g.Pix)
	}
	// Views out of place or missing are refused.
	bad := twoViewTask(1, 1)
	bad.Views[0].Index, bad.Views[1].Index = 1, 0
	if _, d, _ := st.Fuse(ctx, bad); d == nil || d.Stage != StageFuse {
		t.Error("views out of order: want a dead letter")
	}
	short := twoViewTask(1, 1)
	short.CAMs = short.CAMs[:1]
	if _, d, _ := st.Fuse(ctx, short); d == nil || !strings.Contains(d.Reason, "1 CAMs for 2 views") {
		t.Errorf("a missing CAM: %+v", d)
	}
	// Saliency rule without saliency: fallback or skip.
	st.Opts.Fuse.Background, st.Opts.Fuse.SaliencyFallback = BackgroundSaliency, FallbackThreshold
	if lab, d, _ := st.Fuse(ctx, twoViewTask(1, 1)); d != nil || lab.Rule != RuleFallback {
		t.Errorf("fallback: %+v %q", d, lab.Rule)
	}
	st.Opts.Fuse.SaliencyFallback = FallbackSkip
	if _, d, _ := st.Fuse(ctx, twoViewTask(1, 1)); d == nil || !strings.Contains(d.Reason, ErrNoSaliency.Error()) {
		t.Errorf("skip: %+v, want no usable saliency map", d)
	}
	withSal := twoViewTask(1, 1)
	salPNG, _ := imagefile.EncodeGray(&imagefile.Gray{W: 2, H: 2, Pix: []byte{255, 255, 0, 0}})
	withSal.SalStatus, withSal.SalFile = SalOK, salPNG
	if lab, d, _ := st.Fuse(ctx, withSal); d != nil || lab.Rule != string(BackgroundSaliency) || lab.SalStatus != SalOK {
		t.Errorf("saliency rule: %+v %q", d, lab.Rule)
	}
}

func TestLoadProbesExtensions(t *testing.T) {
	st := NewStages(LabelOptions{})
	defer st.Close()
	ctx := context.Background()
	dir := t.TempDir()
	img := imagefile.NewRGB(5, 4)
	png, _ := imagefile.EncodePNG(img)
	st.Store.WriteFile(ctx, filepath.Join(dir, "a.png"), png)
	// A record of the layout names a .jpg; the .png is found.
	task, d, err := st.Load(ctx, dataset.Record{ID: "a", Image: filepath.Join(dir, "a.jpg"), Probe: true})
	if err != nil || d != nil || task.W != 5 || task.H != 4 {
		t.Fatalf("probe: %+v %+v %v", task, d, err)
	}
	// Without probing, or with no file at all, it is a dead letter.
	for _, rec := range []dataset.Record{{ID: "a", Image: filepath.Join(dir, "a.jpg")}, {ID: "b", Image: filepath.Join(dir, "b.jpg"), Probe: true}} {
		if _, d, err := st.Load(ctx, rec); err != nil || d == nil || !strings.Contains(d.Reason, "does not exist") {
			t.Errorf("%+v: dead letter %+v, err %v", rec, d, err)
		}
	}
}

func TestOutputIDs(t *testing.T) {
	for _, tc := range []struct {
		out, uri   string
		label, cam string
	}{
		{"gs://b/out", "gs://b/out/syn_1.png", "syn_1", ""},
		{"gs://b/out/", "gs://b/out/syn_1.png", "syn_1", ""},
		{"gs://b/out", "gs://b/out/_cams/syn_1.cam", "", "syn_1"},
		{"gs://b/out", "gs://b/out/sub/syn_1.png", "", ""},
		{"gs://b/out", "gs://b/out/_run.json", "", ""},
		{"/tmp/out", "/tmp/out/a.png", "a", ""},
		{"/tmp/out", "/tmp/out/_cams/a.cam", "", "a"},
	} {
		id, ok := LabelID(tc.out, tc.uri)
		if ok != (tc.label != "") || id != tc.label {
			t.Errorf("LabelID(%s, %s) = %q, %v", tc.out, tc.uri, id, ok)
		}
		id, ok = CAMID(tc.out, tc.uri)
		if ok != (tc.cam != "") || id != tc.cam {
			t.Errorf("CAMID(%s, %s) = %q, %v", tc.out, tc.uri, id, ok)
		}
	}
}
