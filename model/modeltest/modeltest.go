// Package modeltest holds test helpers shared by the tests of model and
// its subpackages: small synthetic datasets and the pretrained-weight
// fixtures. It is imported by tests only.
package modeltest

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/synth"
)

// TinyData writes a small synthetic set (images of varied sizes around
// size) and loads its train split.
func TinyData(t testing.TB, images, size, classes int) (*storage.Store, *dataset.Dataset) {
	return SynthData(t, synth.Options{Images: images, Size: size, Classes: classes, Seed: 3, ValFraction: 0.1, NoSaliencyFraction: 0.2})
}

// SynthData writes the synthetic set o describes into a temporary
// directory and loads its train split; the store is closed when the test
// ends.
func SynthData(t testing.TB, o synth.Options) (*storage.Store, *dataset.Dataset) {
	t.Helper()
	st := storage.New()
	t.Cleanup(func() { st.Close() })
	root := t.TempDir()
	if _, err := synth.Write(context.Background(), st, root, o); err != nil {
		t.Fatal(err)
	}
	ds, err := dataset.Load(context.Background(), st, root, "train")
	if err != nil {
		t.Fatal(err)
	}
	return st, ds
}

// ReadFixture reads a fixture file (those of model/testdata/pretrained are
// made by its make_fixture.py with PyTorch), decompressing .zst files.
func ReadFixture(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(path, ".zst") {
		dec, err := zstd.NewReader(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer dec.Close()
		if data, err = dec.DecodeAll(data, nil); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	return data
}
