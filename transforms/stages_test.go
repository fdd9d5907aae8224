package transforms

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
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
	img := Image{ID: "a", W: 40, H: 30, Pix: make([]byte, 40*30*3)}
	views := MakeViews(img, model.ViewOptions{Scales: []float64{0.5, 1, 1.5, 2}, Flip: true})
	if len(views) != 8 {
		t.Fatalf("%d views, want 8", len(views))
	}
	for i, v := range views {
		if v.Spec.Index != i || v.ID != "a" || v.Spec.Flip != (i%2 == 1) {
			t.Errorf("view %d: %+v", i, v.Spec)
		}
	}
	local := MakeViews(img, model.ViewOptions{Scales: []float64{1}, LocalViews: "corners", LocalSize: 20})
	if len(local) != 5 || !local[4].Spec.Local || local[4].Spec.Y0 != 10 || local[4].Spec.X0 != 20 {
		t.Errorf("corner views: %+v", local)
	}
}

func TestLookupSaliency(t *testing.T) {
	st := storage.New()
	defer st.Close()
	ctx := context.Background()
	dir := t.TempDir()
	good, _ := imagefile.EncodeGray(imagefile.NewGray(4, 3))
	small, _ := imagefile.EncodeGray(imagefile.NewGray(2, 2))
	st.WriteFile(ctx, filepath.Join(dir, "good.png"), good)
	st.WriteFile(ctx, filepath.Join(dir, "small.png"), small)
	st.WriteFile(ctx, filepath.Join(dir, "bad.png"), []byte("junk"))
	img := Image{ID: "a", W: 4, H: 3}
	for _, tc := range []struct {
		uri    string
		needed bool
		want   string
	}{
		{filepath.Join(dir, "good.png"), true, SalOK},
		{filepath.Join(dir, "good.png"), false, SalNotNeeded},
		{"", true, SalNone},
		{filepath.Join(dir, "gone.png"), true, SalMissing},
		{filepath.Join(dir, "small.png"), true, SalWrongSize},
		{filepath.Join(dir, "bad.png"), true, SalUnreadable},
	} {
		img.Saliency = tc.uri
		meta := LookupSaliency(ctx, st, img, tc.needed, 0)
		if meta.SalStatus != tc.want || (tc.want == SalOK) != (len(meta.Sal) == 12) {
			t.Errorf("%s needed=%v: status %q (%d values), want %q", tc.uri, tc.needed, meta.SalStatus, len(meta.Sal), tc.want)
		}
	}
}

// camOf builds a view CAM for a 2x2 image with one class.
func camOf(index int, v float32) ViewCAM {
	m := maps.New(2, 2, 1)
	for i := range m.Pix {
		m.Pix[i] = v
	}
	m.Pix[0] = 2 * v
	return ViewCAM{ID: "a", Spec: model.ViewSpec{Index: index, Scale: 1}, H: 2, W: 2, C: 1, Data: EncodeMap(m)}
}

func TestFuse(t *testing.T) {
	meta := ImageMeta{ID: "a", Tags: []int{0}, W: 2, H: 2, SalStatus: SalNone}
	o := FuseOptions{Background: "threshold", BgThreshold: 0.6, KeepCAMs: true}
	// Views in any order give the same label; pixel 0 is the peak.
	a, err := Fuse(meta, []ViewCAM{camOf(1, 1), camOf(0, 0.5)}, 1, o)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Fuse(meta, []ViewCAM{camOf(0, 0.5), camOf(1, 1)}, 1, o)
	if !slices.Equal(a.PNG, b.PNG) || a.CAM == nil {
		t.Error("fusion depends on view order, or dropped the CAM")
	}
	lab, _ := imagefile.DecodeLabel(a.PNG, 0)
	if !slices.Equal(lab.Pix, []uint8{1, 0, 0, 0}) {
		t.Errorf("label %v, want [1 0 0 0]", lab.Pix)
	}
	if _, err := Fuse(meta, []ViewCAM{camOf(0, 1), camOf(0, 1)}, 1, o); err == nil {
		t.Error("a view twice: want an error")
	}
	if _, err := Fuse(meta, nil, 1, o); err == nil {
		t.Error("no views: want an error")
	}
	// Views that know their count: one of three missing is refused.
	v0, v2 := camOf(0, 1), camOf(2, 1)
	v0.Spec.Of, v2.Spec.Of = 3, 3
	if _, err := Fuse(meta, []ViewCAM{v0, v2}, 1, o); err == nil || !strings.Contains(err.Error(), "2 of 3 views") {
		t.Errorf("missing view: err = %v, want 2 of 3 views", err)
	}
	// Saliency rule without saliency: fallback or skip.
	o.Background = "saliency"
	o.SaliencyFallback = "threshold"
	if lab, err := Fuse(meta, []ViewCAM{camOf(0, 1)}, 1, o); err != nil || lab.Rule != "threshold(fallback)" {
		t.Errorf("fallback: %v %q", err, lab.Rule)
	}
	o.SaliencyFallback = "skip"
	if _, err := Fuse(meta, []ViewCAM{camOf(0, 1)}, 1, o); !errors.Is(err, ErrNoSaliency) {
		t.Errorf("skip: err = %v, want ErrNoSaliency", err)
	}
	meta.SalStatus, meta.Sal = SalOK, []byte{255, 255, 0, 0}
	if lab, err := Fuse(meta, []ViewCAM{camOf(0, 1)}, 1, o); err != nil || lab.Rule != "saliency" {
		t.Errorf("saliency rule: %v %q", err, lab.Rule)
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
