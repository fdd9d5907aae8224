package trainer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/gomlx/compute"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/artifact"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/synth"
	"github.com/l2gflow/l2gflow/io/weights"
	"github.com/l2gflow/l2gflow/model"
	"github.com/l2gflow/l2gflow/model/maps"
	"github.com/l2gflow/l2gflow/model/modeltest"
)

func testBackend(t testing.TB) compute.Backend {
	t.Helper()
	b, err := model.NewBackend("")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func tinyTrainConfig(out, method string) config.Train {
	c := config.Default().Train
	c.Out, c.Method = out, method
	c.ImageSize, c.ViewSize, c.Views = 64, 48, 4
	c.BatchSize, c.Optimizer, c.LR, c.Schedule = 8, "adam", 0.002, "poly"
	c.Epochs, c.CheckpointEv = 0, 0
	return c
}

// logBuffer is a concurrency-safe progress sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
	on func(line string)
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.on != nil {
		l.on(string(p))
	}
	return l.b.Write(p)
}

// camHitRate measures how often the peak of a tagged class's CAM lies on
// that class's object, and the chance rate (the class's share of pixels).
func camHitRate(t *testing.T, e *model.Engine, st *storage.Store, recs []dataset.Record) (hit, chance float64) {
	var n int
	for _, r := range recs {
		raw, err := st.ReadFile(context.Background(), r.Image, 0)
		if err != nil {
			t.Fatal(err)
		}
		img, _ := imagefile.DecodeRGB(raw, 0)
		gtRaw, _ := st.ReadFile(context.Background(), r.GT, 0)
		gt, _ := imagefile.DecodeLabel(gtRaw, 0)
		fused, err := e.CAM(img, r.Tags, model.ViewOptions{Scales: []float64{1}}, model.FuseOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cam := fused.Map
		for i, tag := range r.Tags {
			best, at := float32(-1), 0
			area := 0
			for p := 0; p < cam.H*cam.W; p++ {
				if v := cam.Pix[p*cam.C+i]; v > best {
					best, at = v, p
				}
				if int(gt.Pix[p]) == tag+1 {
					area++
				}
			}
			// The object, its ignored border included.
			if g := gt.Pix[at]; int(g) == tag+1 || g == imagefile.Ignore {
				hit++
			}
			chance += float64(area) / float64(len(gt.Pix))
			n++
		}
	}
	return hit / float64(n), chance / float64(n)
}

// TestTrainLearnsCAMsInsideObjects checks that training learns: on
// images of one size, where every random crop holds the tagged objects,
// so that 200 steps give a clear signal. (On varied sizes a crop of an
// elongated image can miss a tagged object, which slows learning; that is
// the quality study's subject, TestTrainVariedSizes checks the mechanics.)
func TestTrainLearnsCAMsInsideObjects(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: trains or runs whole jobs (make test-short)")
	}
	st, ds := modeltest.SynthData(t, synth.Options{Images: 160, Size: 64, FixedSize: true, Classes: 3, Seed: 3, ValFraction: 0.1, NoSaliencyFraction: 0.2})
	out := t.TempDir() + "/m.l2g"
	c := tinyTrainConfig(out, "cam")
	c.Steps = 200
	var log logBuffer
	res, err := Run(context.Background(), Options{Config: c, Data: ds, Store: st, Log: &log, ProgressEvery: 1})
	if err != nil {
		t.Fatal(err)
	}
	// The loss falls: compare the first and last progress lines.
	lines := strings.Split(strings.TrimSpace(log.b.String()), "\n")
	first, last := lossOf(t, lines, true), lossOf(t, lines, false)
	if !(last < 0.8*first) {
		t.Errorf("loss went from %.4f to %.4f: want a clear fall", first, last)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.LoadModel(data)
	if err != nil {
		t.Fatal(err)
	}
	if m.SHA256 != res.ArtifactSHA256 || m.Manifest.Metrics.Steps != 200 || m.Manifest.Dataset.Fingerprint != ds.Fingerprint {
		t.Errorf("artifact manifest: %+v", m.Manifest)
	}
	e, err := model.NewEngine(testBackend(t), m, model.EngineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hit, chance := camHitRate(t, e, st, ds.Records[:60])
	t.Logf("CAM peak on the object %.0f%% of the time; chance %.0f%%", 100*hit, 100*chance)
	if hit < 0.6 || hit < 3*chance {
		t.Errorf("CAM peaks on the tagged object %.2f of the time (chance %.2f): want >= 0.6 and >= 3x chance", hit, chance)
	}
	labelsPaddedEqualUnpadded(t, e)
	calibrationReadsNoGroundTruth(t, e, st, ds, m.Manifest.Threshold)
}

// calibrationReadsNoGroundTruth checks the threshold training recorded
// (chosen among the candidates, from the training images with saliency)
// and that calibration reads no ground truth: with every ground-truth path
// pointing at a missing file, and with the ground-truth files deleted, it
// chooses the same threshold from the same agreement figures.
func calibrationReadsNoGroundTruth(t *testing.T, e *model.Engine, st *storage.Store, ds *dataset.Dataset, trained *artifact.Threshold) {
	t.Helper()
	withSal := 0
	for _, r := range ds.Records {
		if r.Saliency != "" {
			withSal++
		}
	}
	if trained == nil || trained.Images != min(withSal, model.CalibrationImages) || !slices.Contains(model.ThresholdCandidates, trained.Value) || len(trained.IoU) != len(model.ThresholdCandidates) {
		t.Fatalf("trained threshold %+v: want one of the candidates, chosen on %d images", trained, min(withSal, model.CalibrationImages))
	}
	recs := slices.Clone(ds.Records)
	for i := range recs {
		if recs[i].GT == "" {
			t.Fatalf("%s: the synthetic record has no ground truth to hide", recs[i].ID)
		}
		recs[i].GT = filepath.Join(t.TempDir(), "missing.png")
	}
	for _, r := range ds.Records {
		if err := os.Remove(r.GT); err != nil {
			t.Fatal(err)
		}
	}
	got, err := model.Calibrate(context.Background(), e, st, recs, model.DefaultViewOptions(), model.FuseOptions{}, 1<<22)
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || got.Value != trained.Value || got.Images != trained.Images || !slices.Equal(got.IoU, trained.IoU) {
		t.Errorf("calibration without ground truth %+v, at training %+v: want the same", got, trained)
	}
}

// labelsPaddedEqualUnpadded labels images of varied sizes with a trained
// model twice, through the engine (views padded to their buckets and
// batched) and with every view run alone at its own size, and requires
// the same label bytes.
func labelsPaddedEqualUnpadded(t *testing.T, e *model.Engine) {
	st, ds := modeltest.TinyData(t, 60, 72, 3)
	ref, err := model.NewForward(testBackend(t), e.Model.Net, e.Model.Params, model.GlobalPrefix)
	if err != nil {
		t.Fatal(err)
	}
	ref.SetMaxCompiled(1000)
	opts := model.ViewOptions{Scales: []float64{0.5, 1, 1.5, 2}, Flip: true}
	sizes := map[[2]int]bool{}
	var maxDiff float64
	for _, r := range ds.Records {
		raw, err := st.ReadFile(context.Background(), r.Image, 0)
		if err != nil {
			t.Fatal(err)
		}
		img, err := imagefile.DecodeRGB(raw, 0)
		if err != nil {
			t.Fatal(err)
		}
		sizes[[2]int{img.W, img.H}] = true
		padded, err := e.CAM(img, r.Tags, opts, model.FuseOptions{})
		if err != nil {
			t.Fatal(err)
		}
		norm := e.Normalize(img)
		views := opts.Views(img.H, img.W)
		var cams []*maps.Map
		for _, v := range views {
			in := model.PrepareView(norm, v)
			cam, dims, _, err := ref.Run(in.Pix, 1, in.H, in.W, nil)
			if err != nil {
				t.Fatal(err)
			}
			m := maps.New(dims[1], dims[2], dims[3]-1)
			for p := 0; p < dims[1]*dims[2]; p++ {
				copy(m.Pix[p*m.C:(p+1)*m.C], cam[p*dims[3]:p*dims[3]+m.C])
			}
			cams = append(cams, m)
		}
		unpadded, err := model.Fuse(cams, views, img.H, img.W, len(e.Model.Manifest.Classes), r.Tags, model.FuseOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range padded.Map.Pix {
			maxDiff = max(maxDiff, math.Abs(float64(padded.Map.Pix[i]-unpadded.Map.Pix[i])))
		}
		a, b := padded.LabelThreshold(0.25), unpadded.LabelThreshold(0.25)
		if !bytes.Equal(a.Pix, b.Pix) {
			t.Errorf("%s (%dx%d): label through padded buckets differs from the unpadded run", r.ID, img.W, img.H)
		}
	}
	t.Logf("%d images of %d sizes: fused CAMs differ by at most %.2g, labels identical", len(ds.Records), len(sizes), maxDiff)
}

// lossOf parses "loss X" from the first or last step line.
func lossOf(t *testing.T, lines []string, first bool) float64 {
	var steps []string
	for _, l := range lines {
		if strings.HasPrefix(l, "step ") {
			steps = append(steps, l)
		}
	}
	if len(steps) < 2 {
		t.Fatalf("too few progress lines: %q", lines)
	}
	l := steps[len(steps)-1]
	if first {
		l = steps[0]
	}
	i := strings.Index(l, "| loss ")
	var v float64
	if _, err := fmt.Sscan(l[i+len("| loss "):], &v); err != nil {
		t.Fatalf("parse %q: %v", l, err)
	}
	return v
}

func TestL2GTrainInterruptAndResume(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: trains or runs whole jobs (make test-short)")
	}
	st, ds := modeltest.TinyData(t, 40, 64, 3)
	dir := t.TempDir()
	run := func(out string, steps int, ctx context.Context, cancelAt string, resume bool) (*Result, error) {
		c := tinyTrainConfig(out, "l2g")
		c.Steps, c.Resume = steps, resume
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		log := &logBuffer{on: func(line string) {
			if cancelAt != "" && strings.HasPrefix(line, cancelAt) {
				cancel()
			}
		}}
		return Run(ctx, Options{Config: c, Data: ds, Store: st, Log: log, ProgressEvery: 1})
	}
	// Uninterrupted reference run.
	ref, err := run(dir+"/ref.l2g", 6, context.Background(), "", false)
	if err != nil {
		t.Fatal(err)
	}
	// Interrupted after step 3, then resumed.
	out := dir + "/m.l2g"
	if _, err := run(out, 6, context.Background(), "step 3/", false); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("interrupted run: err = %v, want ErrInterrupted", err)
	}
	if ok, _ := st.Exists(context.Background(), CheckpointURI(out)); !ok {
		t.Fatal("no checkpoint after the interrupt")
	}
	if ok, _ := st.Exists(context.Background(), out); ok {
		t.Fatal("an interrupted run wrote the model")
	}
	res, err := run(out, 6, context.Background(), "", true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.Metrics.Steps != 6 {
		t.Errorf("resumed run ended at step %d, want 6", res.Manifest.Metrics.Steps)
	}
	if ok, _ := st.Exists(context.Background(), CheckpointURI(out)); ok {
		t.Error("checkpoint left after a finished run")
	}
	a, _ := os.ReadFile(dir + "/ref.l2g")
	b, _ := os.ReadFile(out)
	ma, _ := model.LoadModel(a)
	mb, _ := model.LoadModel(b)
	var maxDiff float64
	for i := range ma.Params.Values {
		for k, v := range ma.Params.Values[i] {
			maxDiff = math.Max(maxDiff, math.Abs(float64(v-mb.Params.Values[i][k])))
		}
	}
	if maxDiff > 1e-4 {
		t.Errorf("resumed weights differ from an uninterrupted run by up to %g", maxDiff)
	}
	_ = ref
	// A checkpoint from other settings is refused.
	if _, err := run(dir+"/ref.l2g", 6, context.Background(), "step 2/", false); !errors.Is(err, ErrInterrupted) {
		t.Fatal(err)
	}
	c := tinyTrainConfig(dir+"/ref.l2g", "l2g")
	c.Steps, c.Resume, c.Views = 6, true, 5
	if _, err := Run(context.Background(), Options{Config: c, Data: ds, Store: st}); err == nil || !strings.Contains(err.Error(), "different settings") {
		t.Errorf("resume with other settings: err = %v", err)
	}
}

func TestLoadModelChecks(t *testing.T) {
	st, ds := modeltest.TinyData(t, 20, 64, 3)
	out := t.TempDir() + "/m.l2g"
	c := tinyTrainConfig(out, "cam")
	c.Steps = 1
	if _, err := Run(context.Background(), Options{Config: c, Data: ds, Store: st}); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(out)
	m, ts, err := artifact.Decode(good)
	if err != nil {
		t.Fatal(err)
	}
	m.Classes = append(m.Classes, "extra")
	wrongClasses, _ := artifact.Marshal(m, ts)
	m.Classes = m.Classes[:3]
	m.Kind = artifact.KindCheckpoint
	checkpoint, _ := artifact.Marshal(m, ts)
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"garbage", []byte("garbage"), "not an l2gflow artifact"},
		{"truncated", good[:len(good)-10], "corrupt"},
		{"class count", wrongClasses, "for 4 classes"},
		{"checkpoint", checkpoint, "not a model"},
	}
	for _, tc := range tests {
		if _, err := model.LoadModel(tc.data); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

// TestTrainVariedSizes trains both methods a few steps on images of every
// shape a user may have: tiny, portrait, landscape, 1:4 and 4:1, large,
// with and without saliency.
func TestTrainVariedSizes(t *testing.T) {
	st := storage.New()
	t.Cleanup(func() { st.Close() })
	root := t.TempDir()
	ctx := context.Background()
	sizes := [][2]int{{1, 1}, {5, 7}, {12, 9}, {40, 90}, {90, 40}, {20, 80}, {80, 20}, {300, 200}, {64, 64}, {37, 121}}
	r := rand.New(rand.NewPCG(1, 1))
	var list []dataset.TagEntry
	for i, s := range sizes {
		id := fmt.Sprintf("img%02d", i)
		img := imagefile.NewRGB(s[0], s[1])
		for k := range img.Pix {
			img.Pix[k] = uint8(r.IntN(256))
		}
		data, err := imagefile.EncodeJPEG(img, 90)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.WriteFile(ctx, storage.Join(root, dataset.ImageDir, id+".jpg"), data); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			sal := imagefile.NewGray(s[0], s[1])
			for k := range sal.Pix {
				sal.Pix[k] = uint8(r.IntN(256))
			}
			data, _ := imagefile.EncodeGray(sal)
			if err := st.WriteFile(ctx, storage.Join(root, dataset.SaliencyDir, id+".png"), data); err != nil {
				t.Fatal(err)
			}
		}
		list = append(list, dataset.TagEntry{ID: id, Tags: []int{i % 3}})
	}
	if err := st.WriteFile(ctx, storage.Join(root, "train_cls.txt"), dataset.FormatTagList(list)); err != nil {
		t.Fatal(err)
	}
	if err := st.WriteFile(ctx, storage.Join(root, dataset.ClassesFile), []byte("a\nb\nc\n")); err != nil {
		t.Fatal(err)
	}
	ds, err := dataset.Load(ctx, st, root, "train")
	if err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{"l2g", "cam"} {
		c := tinyTrainConfig(filepath.Join(t.TempDir(), method+".l2g"), method)
		c.Steps, c.BatchSize = 4, 5
		var log logBuffer
		res, err := Run(ctx, Options{Config: c, Data: ds, Store: st, Log: &log})
		if err != nil {
			t.Fatalf("%s: %v\n%s", method, err, log.b.String())
		}
		if res.Manifest.Metrics.Steps != 4 || strings.Contains(log.b.String(), "NaN") {
			t.Errorf("%s: %d steps, log:\n%s", method, res.Manifest.Metrics.Steps, log.b.String())
		}
		// train.pcm is auto: the manifest records what it decided, and
		// the networks have the module with l2g only.
		var rec config.Train
		var arch model.Arch
		wantPCM := method == "l2g"
		if err := json.Unmarshal(res.Manifest.Training, &rec); err != nil || rec.PCM != map[bool]config.AutoBool{true: config.True, false: config.False}[wantPCM] {
			t.Errorf("%s: manifest records train.pcm %q (%v), want it resolved to %v", method, rec.PCM, err, wantPCM)
		}
		if err := json.Unmarshal(res.Manifest.Networks["global"], &arch); err != nil || arch.PCM != wantPCM {
			t.Errorf("%s: global network PCM %v (%v), want %v", method, arch.PCM, err, wantPCM)
		}
	}
}

// TestTrainFromPretrained trains a few L2G steps of resnet18 from the
// fixture file with frozen batch normalisation: both networks start from
// it, the batch-norm tensors stay the file's, the convolutions move, and
// the artifact names the file and its sha256.
func TestTrainFromPretrained(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: trains or runs whole jobs (make test-short)")
	}
	st, ds := modeltest.TinyData(t, 12, 48, 3)
	dir := t.TempDir()
	file := filepath.Join(dir, "resnet18.safetensors")
	if err := os.WriteFile(file, modeltest.ReadFixture(t, filepath.Join("..", "testdata", "pretrained", "resnet18.safetensors.zst")), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := weights.Open(context.Background(), st, file)
	if err != nil {
		t.Fatal(err)
	}
	c := tinyTrainConfig(filepath.Join(dir, "model.l2g"), "l2g")
	c.Arch, c.Pretrained, c.FreezeBN = "resnet18", file, true
	c.ImageSize, c.ViewSize, c.Views, c.BatchSize, c.Steps = 32, 24, 4, 2, 2
	var log logBuffer
	res, err := Run(context.Background(), Options{Config: c, Data: ds, Log: &log, Store: st})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.b.String())
	}
	p := res.Manifest.Pretrained
	if p == nil || p.Name != "resnet18.safetensors" || p.SHA256 != f.SHA256 || p.Format != "safetensors" || p.Loaded != 100 {
		t.Fatalf("artifact records pretrained %+v, want resnet18.safetensors with sha256 %s", p, f.SHA256)
	}
	if !strings.Contains(log.b.String(), "pretrained resnet18.safetensors (safetensors") {
		t.Errorf("log does not report the pretrained file:\n%s", log.b.String())
	}
	data, err := st.ReadFile(context.Background(), c.Out, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.LoadModel(data)
	if err != nil {
		t.Fatal(err)
	}
	fileVar := f.Tensors["layer3.1.bn2.running_var"].Data
	fileGamma := f.Tensors["layer3.1.bn2.weight"].Data
	gotVar := m.Params.Values[m.Params.Index("global/stage3/block2/conv2/bn/var")]
	gotGamma := m.Params.Values[m.Params.Index("global/stage3/block2/conv2/bn/gamma")]
	for i := range fileVar {
		if gotVar[i] != fileVar[i] || gotGamma[i] != fileGamma[i] {
			t.Fatalf("frozen batch norm changed: var %g -> %g, gamma %g -> %g", fileVar[i], gotVar[i], fileGamma[i], gotGamma[i])
		}
	}
	// The file's weights as the networks started from them.
	arch, _ := model.Preset("resnet18", c.OutputStride)
	net := &model.Net{Arch: arch, Classes: 3, FrozenBN: true}
	specs, _ := net.ParamSpecs(testBackend(t), model.GlobalPrefix)
	start := model.InitParams(specs, 1)
	if _, err := net.LoadPretrained(start, f, true, model.GlobalPrefix); err != nil {
		t.Fatal(err)
	}
	startConv := start.Values[start.Index("global/stage4/block2/conv2/w")]
	got := m.Params.Values[m.Params.Index("global/stage4/block2/conv2/w")]
	var moved, diff float64
	for i := range got {
		d := math.Abs(float64(got[i] - startConv[i]))
		diff = max(diff, d)
		if d > 0 {
			moved++
		}
	}
	if moved == 0 || diff > 0.1 {
		t.Errorf("conv weights after 2 steps: %v changed, max change %g; want small non-zero changes from the file's", moved, diff)
	}
}
