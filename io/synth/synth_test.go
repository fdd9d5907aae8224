package synth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
)

var testOpts = Options{Images: 60, Size: 64, Classes: 5, Seed: 7, ValFraction: 0.25, NoSaliencyFraction: 0.2}

// readTree maps relative paths to contents.
func readTree(t *testing.T, root string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(root, p)
		out[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDeterministic(t *testing.T) {
	st := storage.New()
	defer st.Close()
	a, b := t.TempDir(), t.TempDir()
	o1, o2 := testOpts, testOpts
	o2.Workers = 1 // worker count must not change the output
	if _, err := Write(context.Background(), st, a, o1); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(context.Background(), st, b, o2); err != nil {
		t.Fatal(err)
	}
	ta, tb := readTree(t, a), readTree(t, b)
	if len(ta) != len(tb) {
		t.Fatalf("%d files vs %d", len(ta), len(tb))
	}
	for name, data := range ta {
		if !bytes.Equal(data, tb[name]) {
			t.Errorf("%s differs between two runs with the same seed", name)
		}
	}
	o3 := testOpts
	o3.Seed = 8
	if bytes.Equal(Generate(o3, 0).Image.Pix, Generate(testOpts, 0).Image.Pix) {
		t.Error("a different seed gave the same image")
	}
}

func TestInvariants(t *testing.T) {
	st := storage.New()
	defer st.Close()
	root := t.TempDir()
	sum, err := Write(context.Background(), st, root, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Train+sum.Val != testOpts.Images || sum.Val == 0 || sum.Train == 0 {
		t.Errorf("summary %+v", sum)
	}
	if sum.WithSaliency == testOpts.Images || sum.WithSaliency == 0 {
		t.Errorf("%d of %d images have saliency; want some without", sum.WithSaliency, testOpts.Images)
	}
	multi, repeated := 0, 0
	for _, split := range []string{"train", "val"} {
		ds, err := dataset.Load(context.Background(), st, root, split)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ds.Classes, ClassNames(testOpts.Classes)) {
			t.Errorf("classes %v", ds.Classes)
		}
		for _, rec := range ds.Records {
			imgData, err := os.ReadFile(rec.Image)
			if err != nil {
				t.Fatalf("%s: %v", rec.ID, err)
			}
			img, err := imagefile.DecodeRGB(imgData, 0)
			w, h := testOpts.imageSize(idIndex(t, rec.ID))
			if err != nil || img.W != w || img.H != h {
				t.Fatalf("%s: image %v, %v", rec.ID, img, err)
			}
			if rec.GT == "" {
				t.Fatalf("%s has no ground truth", rec.ID)
			}
			gtData, _ := os.ReadFile(rec.GT)
			gt, err := imagefile.DecodeLabel(gtData, 0)
			if err != nil || gt.W != w || gt.H != h {
				t.Fatalf("%s: ground truth %dx%d for a %dx%d image, %v", rec.ID, gt.W, gt.H, w, h, err)
			}
			present := map[int]bool{}
			for _, v := range gt.Pix {
				switch {
				case v == imagefile.Ignore || v == 0:
				case int(v) <= testOpts.Classes:
					present[int(v)-1] = true
				default:
					t.Fatalf("%s: GT value %d out of range", rec.ID, v)
				}
			}
			var want []int
			for c := range present {
				want = append(want, c)
			}
			slices.Sort(want)
			if !slices.Equal(rec.Tags, want) {
				t.Errorf("%s: tags %v, GT classes %v", rec.ID, rec.Tags, want)
			}
			if len(rec.Tags) == 0 {
				t.Errorf("%s: no object visible", rec.ID)
			}
			if len(rec.Tags) > 1 {
				multi++
			}
			smp := Generate(testOpts, idIndex(t, rec.ID))
			if len(smp.Tags) > 0 && countObjects(smp) > len(smp.Tags) {
				repeated++
			}
		}
	}
	if multi == 0 {
		t.Error("no image with two or more classes")
	}
	if repeated == 0 {
		t.Error("no image with two objects of the same class")
	}
}

func idIndex(t *testing.T, id string) int {
	for i := 0; i < testOpts.Images; i++ {
		if ID(i) == id {
			return i
		}
	}
	t.Fatalf("unknown id %s", id)
	return -1
}

// countObjects counts the 4-connected components of object pixels per
// class, a lower bound on the visible objects.
func countObjects(s Sample) int {
	n, rows := s.GT.W, s.GT.H
	seen := make([]bool, len(s.GT.Pix))
	count := 0
	for i, v := range s.GT.Pix {
		if v == 0 || v == imagefile.Ignore || seen[i] {
			continue
		}
		count++
		stack := []int{i}
		seen[i] = true
		for len(stack) > 0 {
			p := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			x, y := p%n, p/n
			for _, d := range [][2]int{{1, 0}, {-1, 0}, {0, 1}, {0, -1}, {1, 1}, {-1, -1}, {1, -1}, {-1, 1}} {
				nx, ny := x+d[0], y+d[1]
				q := ny*n + nx
				if nx >= 0 && ny >= 0 && nx < n && ny < rows && !seen[q] && (s.GT.Pix[q] == v || s.GT.Pix[q] == imagefile.Ignore) {
					seen[q] = true
					stack = append(stack, q)
				}
			}
		}
	}
	return count
}

func TestWriteRejectsBadOptions(t *testing.T) {
	st := storage.New()
	defer st.Close()
	for _, o := range []Options{{Images: 0, Size: 64, Classes: 3}, {Images: 1, Size: 8, Classes: 3}, {Images: 1, Size: 64, Classes: 21}, {Images: 1, Size: 64, Classes: 3, Generator: "v3"}} {
		if _, err := Write(context.Background(), st, t.TempDir(), o); err == nil {
			t.Errorf("%+v: want an error", o)
		}
	}
}

// TestSizesVary checks that sizes vary the way photos do by default: each
// image its own width and height, long side 0.8-1.3x Size, aspect up to
// 1:1.8, about a third portrait; and that --fixed-size gives the first
// generator's bytes with --generator v1 (hash of its output before sizes
// varied).
func TestSizesVary(t *testing.T) {
	o := Options{Images: 600, Size: 128, Classes: 6, Seed: 1}
	sizes := map[[2]int]bool{}
	portrait := 0
	for i := range o.Images {
		w, h := o.imageSize(i)
		sizes[[2]int{w, h}] = true
		long, short := max(w, h), min(w, h)
		if long < 102 || long > 167 || float64(long)/float64(short) > 1.81 {
			t.Fatalf("image %d: %dx%d", i, w, h)
		}
		if h > w {
			portrait++
		}
	}
	if len(sizes) < 400 || portrait < 150 || portrait > 250 {
		t.Errorf("%d distinct sizes, %d portrait of %d", len(sizes), portrait, o.Images)
	}
	smp := Generate(o, 3)
	if w, h := o.imageSize(3); smp.Image.W != w || smp.Image.H != h || smp.GT.W != w || smp.GT.H != h {
		t.Errorf("sample 3 is %dx%d (GT %dx%d), want %dx%d", smp.Image.W, smp.Image.H, smp.GT.W, smp.GT.H, w, h)
	}

	hash := sha256.New()
	fixed := Options{Size: 64, FixedSize: true, Generator: "v1", Classes: 5, Seed: 7, ValFraction: 0.25, NoSaliencyFraction: 0.2}
	for i := 0; i < 6; i++ {
		s := Generate(fixed, i)
		hash.Write(s.Image.Pix)
		hash.Write(s.GT.Pix)
		if s.Saliency != nil {
			hash.Write(s.Saliency.Pix)
		}
		fmt.Fprint(hash, s.Tags, s.Val)
	}
	if got := fmt.Sprintf("%x", hash.Sum(nil)); got != "a7eb6d0cf1986cb5abf023ddaf8a0f9fab3edb6459131b0c39c7e1bc70b34fa3" {
		t.Errorf("fixed-size samples changed: hash %s", got)
	}
}

func BenchmarkGenerate128(b *testing.B) {
	o := Options{Size: 128, Classes: 6, Seed: 1, NoSaliencyFraction: 0.1}
	for i := 0; b.Loop(); i++ {
		Generate(o, i)
	}
}

// TestSampleSheet draws the documentation's sample picture; with
// L2GFLOW_SAMPLE_SHEET=path it also writes it there (docs/synth-sample.png
// is made so, from the repository root: L2GFLOW_SAMPLE_SHEET=$PWD/docs/synth-sample.png).
func TestSampleSheet(t *testing.T) {
	o := Options{Size: 128, Classes: 6, Seed: 1, NoSaliencyFraction: 0.1, ValFraction: 0.2}
	sheet := SampleSheet(o, 0, 8)
	cw, ch := 0, 0
	for i := range 8 {
		w, h := o.imageSize(i)
		cw, ch = max(cw, w), max(ch, h)
	}
	if sheet.W != 8*(cw+4)+4 || sheet.H != 3*(ch+4)+4 {
		t.Fatalf("sheet %dx%d for cells of %dx%d", sheet.W, sheet.H, cw, ch)
	}
	if path := os.Getenv("L2GFLOW_SAMPLE_SHEET"); path != "" {
		data, err := imagefile.EncodePNG(sheet)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestGeneratorV2 checks what v2 changes and what it keeps: the same
// image sizes as v1 for the same seed, different pixels, and saliency maps
// that agree less with the ground truth (parts cut off, bleeding into
// clutter and distractors) while still being mostly right.
func TestGeneratorV2(t *testing.T) {
	iou := func(s Sample) (float64, bool) {
		if s.Saliency == nil {
			return 0, false
		}
		inter, union := 0, 0
		for i, g := range s.GT.Pix {
			fg := g != 0 && g != imagefile.Ignore
			sal := s.Saliency.Pix[i] >= 128
			if g == imagefile.Ignore {
				continue
			}
			if fg && sal {
				inter++
			}
			if fg || sal {
				union++
			}
		}
		return float64(inter) / float64(max(union, 1)), true
	}
	var sum1, sum2 float64
	n, worse := 0, 0
	for i := 0; i < 120; i++ {
		o1 := Options{Size: 96, Classes: 6, Seed: 5, Generator: "v1"}
		o2 := o1
		o2.Generator = "v2"
		a, b := Generate(o1, i), Generate(o2, i)
		if a.Image.W != b.Image.W || a.Image.H != b.Image.H {
			t.Fatalf("%s: v2 changed the size", a.ID)
		}
		if bytes.Equal(a.Image.Pix, b.Image.Pix) {
			t.Errorf("%s: v2 image identical to v1", a.ID)
		}
		i1, ok1 := iou(a)
		i2, ok2 := iou(b)
		if ok1 && ok2 {
			sum1 += i1
			sum2 += i2
			n++
			if i2 < i1-0.05 {
				worse++
			}
		}
	}
	m1, m2 := sum1/float64(n), sum2/float64(n)
	t.Logf("saliency IoU with ground truth: v1 %.3f, v2 %.3f; v2 clearly worse on %d of %d", m1, m2, worse, n)
	if m2 >= m1 || m2 < 0.5 || worse < n/5 {
		t.Errorf("v2 saliency IoU %.3f (v1 %.3f, %d of %d worse): want imperfect but mostly right", m2, m1, worse, n)
	}
}

// variantPins are the sha256 of each variant's first image (seed 1, size
// 128, 6 classes): its JPEG, ground truth and saliency PNG, pinned before
// any result on the variant was recorded, so that a change to a variant
// cannot go unnoticed. Regenerate only for a new variant (and say so).
var variantPins = map[string]string{
	"v1":            "0aa7193569769bb8a9326fec9c94e209949a62dbb7a287765ecc8937238455ba",
	"v2":            "44dcf2e31dfe4791b9e2e4490d61c5d9f7c5ea98d7b2e0d4154a1f657584f605",
	"large-weak":    "5ceef4620a58804eca2c70a22a02466c8ece362cdc19940c5b1bf2626ec816f9",
	"part-only":     "2d13e8a29c467a7cc62e95707ec74894fcf0fc456dde81787a9ca205cde968c0",
	"poor-saliency": "0902aedbe9c219221390a5f9d71ef78f77b0344a7d564ef0da2bcefd2e5b7454",
	"small-objects": "f3ff50b916d7a2a23d24d3c6ca826494e045bd386b8eac86e7ad5a0fc73f2b7e",
	"strong-bodies": "fc9303a68192e45a60a43172f8132b9ccf2044b6a1dc9cac2b5b60c718ae1239",
}

// TestVariantsPinned checks that every variant makes the images it made
// when its results were recorded.
func TestVariantsPinned(t *testing.T) {
	for _, name := range Variants() {
		o := Options{Generator: name, Size: 128, Classes: 6, Seed: 1, NoSaliencyFraction: 0.1, ValFraction: 0.2}
		smp := Generate(o, 0)
		h := sha256.New()
		jpg, err := imagefile.EncodeJPEG(smp.Image, 92)
		if err != nil {
			t.Fatal(err)
		}
		gt, _ := imagefile.EncodeLabel(smp.GT)
		h.Write(jpg)
		h.Write(gt)
		if smp.Saliency != nil {
			sal, _ := imagefile.EncodeGray(smp.Saliency)
			h.Write(sal)
		}
		got := hex.EncodeToString(h.Sum(nil))
		if want, ok := variantPins[name]; !ok {
			t.Errorf("variant %s has no pin; its first image hashes to %s", name, got)
		} else if got != want {
			t.Errorf("variant %s changed: its first image hashes to %s, pinned %s", name, got, want)
		}
		if VariantDoc(name) == "" {
			t.Errorf("variant %s has no description", name)
		}
	}
}

// TestVariantSheets draws six samples of each variant; with
// L2GFLOW_SAMPLE_SHEETS=dir it writes them there as <variant>.png (the
// docs/variants/ pictures are made so).
func TestVariantSheets(t *testing.T) {
	dir := os.Getenv("L2GFLOW_SAMPLE_SHEETS")
	for _, name := range Variants() {
		o := Options{Generator: name, Size: 128, Classes: 6, Seed: 1, NoSaliencyFraction: 0.1, ValFraction: 0.2}
		sheet := SampleSheet(o, 0, 6)
		if sheet.W == 0 || sheet.H == 0 {
			t.Fatalf("%s: empty sheet", name)
		}
		if dir == "" {
			continue
		}
		data, err := imagefile.EncodePNG(sheet)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".png"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
