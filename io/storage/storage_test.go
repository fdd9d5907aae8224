package storage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/api/googleapi"

	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/storage/gcstest"
)

// roundTrip exercises one root (local dir or gs:// prefix) the same way.
func roundTrip(t *testing.T, root string) {
	ctx := context.Background()
	s := storage.New()
	defer s.Close()

	a := storage.Join(root, "d", "a.txt")
	b := storage.Join(root, "d", "sub", "b.png")
	c := storage.Join(root, "c.txt")
	for uri, body := range map[string]string{a: "alpha", b: "beta", c: "gamma"} {
		if err := s.WriteFile(ctx, uri, []byte(body)); err != nil {
			t.Fatalf("WriteFile(%s): %v", uri, err)
		}
	}
	got, err := s.ReadFile(ctx, a, 0)
	if err != nil || string(got) != "alpha" {
		t.Fatalf("ReadFile(%s) = %q, %v; want alpha", a, got, err)
	}
	if _, err := s.ReadFile(ctx, a, 3); err == nil {
		t.Errorf("ReadFile with limit 3 of a 5-byte object: want error")
	}

	tests := []struct {
		prefix, pattern string
		want            []string
	}{
		{storage.Join(root, "d"), "", []string{a, b}},
		{storage.Join(root, "d"), "*.png", []string{b}},
		{root, "*.txt", []string{c, a}},
		{storage.Join(root, "nothing-here"), "*", nil},
	}
	for _, tc := range tests {
		got, err := s.List(ctx, tc.prefix, tc.pattern)
		if err != nil {
			t.Fatalf("List(%s, %q): %v", tc.prefix, tc.pattern, err)
		}
		want := append([]string(nil), tc.want...)
		if len(want) > 1 {
			// List sorts.
			if want[0] > want[1] {
				want[0], want[1] = want[1], want[0]
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("List(%s, %q) = %v, want %v", tc.prefix, tc.pattern, got, want)
		}
	}

	for uri, want := range map[string]bool{a: true, storage.Join(root, "d", "zzz"): false} {
		ok, err := s.Exists(ctx, uri)
		if err != nil || ok != want {
			t.Errorf("Exists(%s) = %v, %v; want %v", uri, ok, err, want)
		}
	}

	// A failed write leaves the previous object untouched and nothing new.
	boom := errors.New("boom")
	err = s.Write(ctx, a, func(w io.Writer) error {
		w.Write([]byte("half-writ"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Write with failing fill: err = %v, want boom", err)
	}
	if got, _ := s.ReadFile(ctx, a, 0); string(got) != "alpha" {
		t.Errorf("after failed overwrite %s = %q, want alpha", a, got)
	}
	n := storage.Join(root, "never.txt")
	_ = s.Write(ctx, n, func(w io.Writer) error { w.Write([]byte("x")); return boom })
	if ok, _ := s.Exists(ctx, n); ok {
		t.Errorf("failed write published %s", n)
	}

	_, err = s.ReadFile(ctx, storage.Join(root, "missing.txt"), 0)
	if !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("ReadFile(missing) err = %v, want ErrNotExist", err)
	}
	if err := s.Remove(ctx, c); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if ok, _ := s.Exists(ctx, c); ok {
		t.Errorf("%s still exists after Remove", c)
	}
	if err := s.Remove(ctx, c); err != nil {
		t.Errorf("Remove of a missing object: %v", err)
	}
}

func TestLocalRoundTrip(t *testing.T) {
	dir := t.TempDir()
	roundTrip(t, dir)
	// No temporary files are left behind.
	var leftovers []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.Contains(info.Name(), ".tmp-") {
			leftovers = append(leftovers, p)
		}
		return nil
	})
	if len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func TestGCSRoundTrip(t *testing.T) {
	gcstest.Start(t, "bkt")
	roundTrip(t, "gs://bkt/root")
}

func TestUnsupportedScheme(t *testing.T) {
	s := storage.New()
	defer s.Close()
	_, err := s.ReadFile(context.Background(), "s4://x/y", 0)
	if err == nil || !strings.Contains(err.Error(), "unsupported scheme") {
		t.Errorf("err = %v, want unsupported scheme", err)
	}
}

func TestJoin(t *testing.T) {
	tests := []struct {
		root string
		elem []string
		want string
	}{
		{"gs://b/x/", []string{"y", "z.png"}, "gs://b/x/y/z.png"},
		{"gs://b", []string{"k"}, "gs://b/k"},
		{"/tmp/a", []string{"b"}, "/tmp/a/b"},
	}
	for _, tc := range tests {
		if got := storage.Join(tc.root, tc.elem...); got != tc.want {
			t.Errorf("Join(%q, %q) = %q, want %q", tc.root, tc.elem, got, tc.want)
		}
	}
}

func TestGCSThroughFaults(t *testing.T) {
	srv := gcstest.Start(t, "bkt")
	stats := gcstest.FaultyProxy(t, srv, gcstest.Faults{FirstUnavailable: 3, CutEvery: 4})
	s := storage.New()
	s.InitialBackoff = time.Millisecond
	defer s.Close()
	ctx := context.Background()
	for i := 0; i < 12; i++ {
		uri := fmt.Sprintf("gs://bkt/f/%02d.txt", i)
		if err := s.WriteFile(ctx, uri, []byte(uri)); err != nil {
			t.Fatalf("write %s: %v", uri, err)
		}
	}
	uris, err := s.List(ctx, "gs://bkt/f", "*.txt")
	if err != nil || len(uris) != 12 {
		t.Fatalf("list: %d objects, %v", len(uris), err)
	}
	for _, u := range uris {
		b, err := s.ReadFile(ctx, u, 0)
		if err != nil || string(b) != u {
			t.Fatalf("read %s = %q, %v", u, b, err)
		}
	}
	un, cut := stats()
	if un != 3 || cut == 0 || s.Retries() == 0 {
		t.Errorf("faults: %d unavailable, %d cut; %d retries", un, cut, s.Retries())
	}
	// A permanent error is not retried.
	before := s.Retries()
	if _, err := s.ReadFile(ctx, "gs://bkt/f/missing.txt", 0); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("missing object: %v", err)
	}
	if s.Retries() != before {
		t.Errorf("a 404 was retried")
	}
}

func TestTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("read gs://b/x: %w", &googleapi.Error{Code: 503}), true},
		{&googleapi.Error{Code: 429}, true},
		{&googleapi.Error{Code: 403}, false},
		{&googleapi.Error{Code: 404}, false},
		{fmt.Errorf("x: %w", io.ErrUnexpectedEOF), true},
		{errors.New("read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer"), true},
		{storage.ErrNotExist, false},
		{context.Canceled, false},
		{errors.New("bad request"), false},
	} {
		if got := storage.Transient(tc.err); got != tc.want {
			t.Errorf("Transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestCleanStaleTemps(t *testing.T) {
	dir := t.TempDir()
	// A process that has ended: its pid is free (or reused, which only
	// keeps the file).
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := cmd.Process.Pid
	files := map[string]bool{ // name -> removed
		fmt.Sprintf(".a.png.tmp-%d-123", dead):       true,
		fmt.Sprintf("_cams/.b.cam.tmp-%d-9", dead):   true,
		fmt.Sprintf(".c.png.tmp-%d-5", os.Getpid()):  false, // being written by this process
		fmt.Sprintf(".d.png.tmp-%d-5", os.Getppid()): false, // a running process
		".e.png.tmp-123456":                          false, // not our pattern
		"f.png":                                      false,
	}
	for name := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	n, err := storage.CleanStaleTemps(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("removed %d, want 2", n)
	}
	for name, gone := range files {
		_, err := os.Stat(filepath.Join(dir, name))
		if gone != os.IsNotExist(err) {
			t.Errorf("%s: removed %v, want %v", name, os.IsNotExist(err), gone)
		}
	}
	if n, err := storage.CleanStaleTemps("gs://bucket/out"); n != 0 || err != nil {
		t.Errorf("remote: %d, %v", n, err)
	}
}
