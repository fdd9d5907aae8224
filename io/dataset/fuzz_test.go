package dataset

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func FuzzParseTagList(f *testing.F) {
	for _, s := range []string{
		"a 0 2\nb\nc 1 1\n",
		"\xef\xbb\xbfa 0\r\nb 1\r\n",
		"a 0\na 1\n",
		"../x 0\n",
		"a 99\n",
		"a -0\n",
		"\n\n",
		"a\t1\tb\n",
	} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, n uint8) {
		classes := int(n%32) + 1
		entries, err := ParseTagList("list.txt", bytes.NewReader(data), classes)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "list.txt") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for _, e := range entries {
			if ValidateID(e.ID) != nil {
				t.Fatalf("accepted id %q", e.ID)
			}
			if !slices.IsSorted(e.Tags) || len(slices.Compact(slices.Clone(e.Tags))) != len(e.Tags) {
				t.Fatalf("tags %v not sorted and unique", e.Tags)
			}
			for _, k := range e.Tags {
				if k < 0 || k >= classes {
					t.Fatalf("tag %d outside 0..%d", k, classes-1)
				}
			}
		}
		back, err := ParseTagList("again", bytes.NewReader(FormatTagList(entries)), classes)
		if err != nil || !reflect.DeepEqual(back, entries) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, entries, back)
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	for _, s := range []string{
		`{"id":"a","image":"img/a.jpg","tags":["cat"],"saliency":"s/a.png","gt":"gt/a.png"}` + "\n",
		`{"id":"b","image":"gs://bucket/b.jpg","tags":[]}` + "\r\n",
		`{"id":"c","image":"../c.jpg"}`,
		`{"id":"d","image":"/abs/d.png","tags":["dog","cat","dog"]}`,
		`{"id":"e",`,
		`{"id":"f","image":"x","extra":1}`,
	} {
		f.Add([]byte(s))
	}
	classes := []string{"cat", "dog"}
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := ParseManifest("m.jsonl", bytes.NewReader(data), classes, "/data/root")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "m.jsonl") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for _, r := range recs {
			if ValidateID(r.ID) != nil || r.Image == "" {
				t.Fatalf("accepted record %+v", r)
			}
			for _, u := range []string{r.Image, r.Saliency, r.GT} {
				if u != "" && !strings.HasPrefix(u, "/") && !strings.Contains(u, "://") {
					t.Fatalf("relative URI %q survived", u)
				}
				if strings.HasPrefix(u, "/data/") && u != "/data/root" && !strings.HasPrefix(u, "/data/root/") {
					t.Fatalf("%q resolved outside the manifest's directory", u)
				}
			}
		}
	})
}

func FuzzParseClasses(f *testing.F) {
	for _, s := range []string{"cat\ndog\n", "\xef\xbb\xbfa\r\nb\r\n", "a\na\n", "big cat\n", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		classes, err := ParseClasses("classes.txt", data)
		if err != nil {
			return
		}
		if len(classes) == 0 || len(classes) > 254 {
			t.Fatalf("%d classes accepted", len(classes))
		}
		seen := map[string]bool{}
		for _, c := range classes {
			if c == "" || strings.ContainsAny(c, " \t") || seen[c] {
				t.Fatalf("class %q accepted", c)
			}
			seen[c] = true
		}
	})
}
