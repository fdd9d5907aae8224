package dataset

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/storage/gcstest"
)

func TestParseTagList(t *testing.T) {
	data := "\xef\xbb\xbfa 2 0\r\n\r\nb\n  c 1 1 \n"
	got, err := ParseTagList("train_cls.txt", strings.NewReader(data), 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []TagEntry{{"a", []int{0, 2}}, {"b", nil}, {"c", []int{1}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if back, _ := ParseTagList("x", bytes.NewReader(FormatTagList(got)), 3); !reflect.DeepEqual(back, want) {
		t.Errorf("FormatTagList round trip: %+v", back)
	}
}

func TestParseTagListErrors(t *testing.T) {
	tests := []struct {
		name, data string
		want       []string
	}{
		{"unknown index", "a 0\nb 7\n", []string{"list.txt:2", "class index 7", "0..2"}},
		{"negative index", "a -1\n", []string{"list.txt:1", "-1"}},
		{"not an integer", "a dog\n", []string{"list.txt:1", `"dog"`}},
		{"duplicate id", "a 0\n\nb 1\na 2\n", []string{"list.txt:4", "duplicate", "line 1"}},
		{"path separator", "x/y 0\n", []string{"list.txt:1", "path separator"}},
		{"backslash", `x\y 0` + "\n", []string{"path separator"}},
		{"dot dot", "..secret 0\n", []string{"list.txt:1", ".."}},
		{"reserved", "_run 0\n", []string{"reserved"}},
		{"empty file", "", []string{"list.txt", "no images"}},
		{"only blank lines", "\r\n  \n", []string{"list.txt", "no images"}},
		{"line too long", "a 0\nb " + strings.Repeat("1 ", MaxLineBytes) + "\n", []string{"list.txt:2", "longer than"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTagList("list.txt", strings.NewReader(tc.data), 3)
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestParseClasses(t *testing.T) {
	got, err := ParseClasses("classes.txt", []byte("\xef\xbb\xbfcat\r\n\ndog\n"))
	if err != nil || !reflect.DeepEqual(got, []string{"cat", "dog"}) {
		t.Errorf("got %v, %v", got, err)
	}
	for name, data := range map[string]string{
		"duplicate": "cat\ndog\ncat\n",
		"space":     "big cat\n",
		"empty":     "\n\n",
	} {
		if _, err := ParseClasses("classes.txt", []byte(data)); err == nil || !strings.Contains(err.Error(), "classes.txt") {
			t.Errorf("%s: err = %v, want one naming the file", name, err)
		}
	}
}

func TestParseManifest(t *testing.T) {
	classes := []string{"cat", "dog"}
	data := `{"id":"a","image":"img/a.jpg","tags":["dog","cat"],"saliency":"gs://b/s/a.png"}` + "\r\n\n" +
		`{"id":"b","image":"/abs/b.png","tags":[],"gt":"gt/b.png"}` + "\n"
	got, err := ParseManifest("m.jsonl", strings.NewReader(data), classes, "/data")
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{
		{ID: "a", Image: "/data/img/a.jpg", Tags: []int{0, 1}, Saliency: "gs://b/s/a.png"},
		{ID: "b", Image: "/abs/b.png", GT: "/data/gt/b.png"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	bad := []struct {
		name, data string
		want       []string
	}{
		{"unknown class", `{"id":"a","image":"x","tags":["cow"]}`, []string{"m.jsonl:1", `"cow"`}},
		{"unknown field", `{"id":"a","image":"x","tag":["cat"]}`, []string{"m.jsonl:1", "tag"}},
		{"bad json", "{\"id\":\"a\"\n", []string{"m.jsonl:1"}},
		{"no image", `{"id":"a","tags":["cat"]}`, []string{"m.jsonl:1", "no image"}},
		{"empty id", `{"id":"","image":"x"}`, []string{"m.jsonl:1", "empty id"}},
		{"duplicate", "{\"id\":\"a\",\"image\":\"x\"}\n{\"id\":\"a\",\"image\":\"y\"}", []string{"m.jsonl:2", "duplicate"}},
		{"traversal", `{"id":"../a","image":"x"}`, []string{"m.jsonl:1"}},
		{"image outside", `{"id":"a","image":"../../etc/x.jpg"}`, []string{"m.jsonl:1", "image of a", "outside"}},
		{"saliency outside", `{"id":"a","image":"x.jpg","saliency":"s/../../y.png"}`, []string{"m.jsonl:1", "saliency of a", "outside"}},
		{"empty", "\n", []string{"m.jsonl", "no images"}},
	}
	for _, tc := range bad {
		_, err := ParseManifest("m.jsonl", strings.NewReader(tc.data), classes, "")
		if err == nil {
			t.Errorf("%s: want an error", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", tc.name, err, w)
			}
		}
	}
}

// writeLayout writes a tiny layout: two classes, three ids, one .png image,
// one id whose image is missing, ground truth and saliency for some.
func writeLayout(t *testing.T, st *storage.Store, root string) {
	ctx := context.Background()
	files := map[string]string{
		"classes.txt":                 "cat\ndog\n",
		"train_cls.txt":               "a 0\nb 1\nc 0 1\n",
		"JPEGImages/a.jpg":            "x",
		"JPEGImages/b.png":            "x",
		"JPEGImages/sub/c.jpg":        "x", // in a sub-folder: not c's image
		"SegmentationClass/a.png":     "x",
		"Saliency/b.png":              "x",
		"Saliency/readme.txt":         "x",
		"SegmentationClass/extra.png": "x",
	}
	for name, body := range files {
		if err := st.WriteFile(ctx, storage.Join(root, strings.Split(name, "/")...), []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
}

func checkLayout(t *testing.T, root string) {
	st := storage.New()
	defer st.Close()
	writeLayout(t, st, root)
	ds, err := Open(context.Background(), st, root, "train", "")
	if err != nil {
		t.Fatal(err)
	}
	j := func(e ...string) string { return storage.Join(root, e...) }
	want := []Record{
		{ID: "a", Image: j("JPEGImages", "a.jpg"), Tags: []int{0}, GT: j("SegmentationClass", "a.png")},
		{ID: "b", Image: j("JPEGImages", "b.png"), Tags: []int{1}, Saliency: j("Saliency", "b.png")},
		{ID: "c", Image: j("JPEGImages", "c.jpg"), Tags: []int{0, 1}},
	}
	if !reflect.DeepEqual(ds.Records, want) {
		t.Errorf("records:\n got %+v\nwant %+v", ds.Records, want)
	}
	if !reflect.DeepEqual(ds.Classes, []string{"cat", "dog"}) || len(ds.Fingerprint) != 64 {
		t.Errorf("classes %v fingerprint %q", ds.Classes, ds.Fingerprint)
	}
	if _, err := Load(context.Background(), st, root, "val"); err == nil || !strings.Contains(err.Error(), "val_cls.txt") {
		t.Errorf("missing split: err = %v, want one naming val_cls.txt", err)
	}
}

func TestLoadLocal(t *testing.T) { checkLayout(t, t.TempDir()) }

func TestLoadGCS(t *testing.T) {
	gcstest.Start(t, "data")
	checkLayout(t, "gs://data/voc")
}

func TestDefaultClasses(t *testing.T) {
	st := storage.New()
	defer st.Close()
	root := t.TempDir()
	if err := st.WriteFile(context.Background(), storage.Join(root, "train_cls.txt"), []byte("a 19\n")); err != nil {
		t.Fatal(err)
	}
	ds, err := Load(context.Background(), st, root, "train")
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Classes) != 20 || ds.Classes[19] != "tvmonitor" {
		t.Errorf("default classes = %v", ds.Classes)
	}
}

// lineGenerator produces a tag list of n lines on the fly: the list never
// exists whole in memory.
type lineGenerator struct {
	n, i int
	buf  []byte
}

func (g *lineGenerator) Read(p []byte) (int, error) {
	for len(g.buf) < len(p) && g.i < g.n {
		g.buf = append(g.buf, fmt.Sprintf("img_%07d %d %d\n", g.i, g.i%3, (g.i+1)%3)...)
		g.i++
	}
	if len(g.buf) == 0 {
		return 0, io.EOF
	}
	k := copy(p, g.buf)
	g.buf = g.buf[k:]
	return k, nil
}

// TestParseTagListStreams parses a long list from a reader, keeping only
// the parsed entries: the bytes of the list are never held whole.
func TestParseTagListStreams(t *testing.T) {
	const n = 300_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	entries, err := ParseTagList("long.txt", &lineGenerator{n: n}, 3)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if len(entries) != n || entries[n-1].ID != fmt.Sprintf("img_%07d", n-1) {
		t.Fatalf("%d entries", len(entries))
	}
	// Each entry holds an id string and a small tag slice (~100 bytes);
	// the text itself (~6 MB) must not be retained.
	if live := int64(after.HeapAlloc) - int64(before.HeapAlloc); live > 200*n {
		t.Errorf("%d bytes live after parsing %d lines", live, n)
	}
}
