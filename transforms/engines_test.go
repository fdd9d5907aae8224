package transforms

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"
	"weak"

	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/model"
	"github.com/l2gflow/l2gflow/model/trainer/trainertest"
)

// TestReleaseEnginesLetsTheModelGo loads a model's engine twice (the
// cache's one engine), runs it, releases the cache and requires the
// engine to be collected once the caller lets go: nothing else (its
// backend's worker goroutines, say) may keep a released model alive.
func TestReleaseEnginesLetsTheModelGo(t *testing.T) {
	dir := t.TempDir()
	root, modelURI := filepath.Join(dir, "data"), filepath.Join(dir, "m.l2g")
	st := storage.New()
	defer st.Close()
	ds := trainertest.MustWrite(t, st, root, modelURI, trainertest.Options{Images: 4, Size: 40, Seed: 3})
	ctx := context.Background()
	load := func() *model.Engine {
		e, err := LoadEngine(ctx, st, modelURI, model.DefaultBackend, model.EngineOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := load()
	if again := load(); again != e {
		t.Fatal("a second load of the same model made a second engine")
	}
	data, err := st.ReadFile(ctx, ds.Records[0].Image, 0)
	if err != nil {
		t.Fatal(err)
	}
	img, err := imagefile.DecodeRGB(data, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Logits(img); err != nil { // compiles and runs a bucket
		t.Fatal(err)
	}
	gone := weak.Make(e)
	ReleaseEngines()
	if reloaded := load(); reloaded == e {
		t.Fatal("the released engine was handed out again")
	}
	ReleaseEngines()
	e = nil
	for range 5 {
		runtime.GC()
		if gone.Value() == nil {
			return
		}
	}
	t.Fatal("a released engine is still reachable after garbage collection")
}
