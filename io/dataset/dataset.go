// Package dataset reads the datasets l2gflow works on: a VOC-style layout
// under a root (local or gs://) with tag lists <split>_cls.txt, or a JSON
// Lines manifest of URIs. It validates ids and tags and reports bad input
// with the file and line at fault.
package dataset

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/l2gflow/l2gflow/io/storage"
)

// Layout directories and files under a dataset root.
const (
	ImageDir    = "JPEGImages"
	GTDir       = "SegmentationClass"
	SaliencyDir = "Saliency"
	ClassesFile = "classes.txt"
)

// VOCClasses are the 20 PASCAL VOC foreground classes, the default.
var VOCClasses = []string{"aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
	"chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep",
	"sofa", "train", "tvmonitor"}

// Record is one image of a dataset.
type Record struct {
	ID       string `json:"id"`
	Image    string `json:"image"`              // URI of the JPEG or PNG image
	Tags     []int  `json:"tags"`               // sorted 0-based foreground class indices
	Saliency string `json:"saliency,omitempty"` // URI of the 8-bit saliency map, "" if none
	GT       string `json:"gt,omitempty"`       // URI of the ground-truth label map, "" if none
	// Probe marks a record whose URIs follow the dataset layout rather
	// than a listing (records read by a pipeline from a tag list): other
	// image extensions are tried when Image does not exist, and a missing
	// saliency map or ground truth means the dataset has none for it.
	Probe bool `json:"probe,omitempty"`
}

// ImageExtensions are the image file extensions of the layout, in the
// order a probing reader tries them.
var ImageExtensions = []string{".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG"}

// Dataset is a validated list of records and the class names.
type Dataset struct {
	Classes []string
	Records []Record
	// Source names where the records came from (tag list or manifest URI).
	Source string
	// Fingerprint is the sha256 of the class names and the tag list or
	// manifest bytes: it identifies the data a model was trained on.
	Fingerprint string
}

// MaxLineBytes bounds one line of a tag list, class list or manifest.
const MaxLineBytes = 1 << 20

// eachLine streams r line by line, calling fn with each line's 1-based
// number and text. It tolerates a UTF-8 byte-order mark and CRLF endings,
// and fails on a line longer than MaxLineBytes rather than cutting the
// list short.
func eachLine(name string, r io.Reader, fn func(n int, text string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), MaxLineBytes)
	n := 0
	for sc.Scan() {
		n++
		text := sc.Text()
		if n == 1 {
			text = strings.TrimPrefix(text, "\ufeff")
		}
		if err := fn(n, strings.TrimRight(text, "\r")); err != nil {
			if !IsInputError(err) {
				err = &InputError{err}
			}
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return inputErrorf("%s:%d: line longer than %d bytes", name, n+1, MaxLineBytes)
		}
		return fmt.Errorf("%s:%d: %w", name, n+1, err)
	}
	return nil
}

// InputError is an error in a dataset's list, manifest or class names: a
// bad line, a duplicate id, an empty or missing list. It is the user's
// input, not a failure of the run (the CLI exits 2 on it).
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// IsInputError reports whether err is, or wraps, an InputError.
func IsInputError(err error) bool {
	var ie *InputError
	return errors.As(err, &ie)
}

// inputErrorf makes an InputError.
func inputErrorf(format string, args ...any) error {
	return &InputError{fmt.Errorf(format, args...)}
}

// idLines remembers the line of each id of a list.
type idLines map[string]int

// add validates an id found on line n of list name and refuses a second
// use of it, naming both lines.
func (s idLines) add(name string, n int, id string) error {
	if err := ValidateID(id); err != nil {
		return fmt.Errorf("%s:%d: %w", name, n, err)
	}
	if prev, ok := s[id]; ok {
		return fmt.Errorf("%s:%d: duplicate id %q (first on line %d)", name, n, id, prev)
	}
	s[id] = n
	return nil
}

// errNoImages refuses a tag list or manifest without entries.
func errNoImages(name string) error { return inputErrorf("%s: no images listed", name) }

// ValidateID checks that an id can be used as a file name in every layout.
func ValidateID(id string) error {
	switch {
	case id == "":
		return errors.New("empty id")
	case id == "." || id == ".." || strings.Contains(id, ".."):
		return fmt.Errorf("id %q contains \"..\"", id)
	case strings.ContainsAny(id, `/\`):
		return fmt.Errorf("id %q contains a path separator", id)
	case strings.HasPrefix(id, "_"):
		return fmt.Errorf("id %q starts with _ (reserved for run records)", id)
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f || r == ' ' || r == '\t' {
			return fmt.Errorf("id %q contains a space or control character", id)
		}
	}
	return nil
}

// ParseClasses parses a classes file: one foreground class name a line;
// blank lines are skipped.
func ParseClasses(name string, data []byte) ([]string, error) {
	var classes []string
	seen := map[string]int{}
	err := eachLine(name, bytes.NewReader(data), func(n int, text string) error {
		c := strings.TrimSpace(text)
		if c == "" {
			return nil
		}
		if strings.ContainsAny(c, " \t") {
			return fmt.Errorf("%s:%d: class name %q contains a space", name, n, c)
		}
		if prev, ok := seen[c]; ok {
			return fmt.Errorf("%s:%d: class %q already named on line %d", name, n, c, prev)
		}
		seen[c] = n
		classes = append(classes, c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(classes) == 0 {
		return nil, inputErrorf("%s: no class names", name)
	}
	if len(classes) > 254 {
		return nil, inputErrorf("%s: %d classes; at most 254 fit a label map with background and 255 = ignore", name, len(classes))
	}
	return classes, nil
}

// TagEntry is one line of a tag list.
type TagEntry struct {
	ID   string
	Tags []int
}

// ParseTagLine parses one "<id> <class_index>..." line with 0-based
// foreground class indices below numClasses; ok is false for a blank
// line. The id is checked with ValidateID.
func ParseTagLine(text string, numClasses int) (e TagEntry, ok bool, err error) {
	fields := strings.Fields(strings.TrimPrefix(strings.TrimRight(text, "\r"), "\ufeff"))
	if len(fields) == 0 {
		return TagEntry{}, false, nil
	}
	id := fields[0]
	if err := ValidateID(id); err != nil {
		return TagEntry{}, false, err
	}
	var tags []int
	for _, f := range fields[1:] {
		k, err := strconv.Atoi(f)
		if err != nil {
			return TagEntry{}, false, fmt.Errorf("class index %q of %s is not an integer", f, id)
		}
		if k < 0 || k >= numClasses {
			return TagEntry{}, false, fmt.Errorf("class index %d of %s is outside 0..%d", k, id, numClasses-1)
		}
		tags = append(tags, k)
	}
	slices.Sort(tags)
	return TagEntry{ID: id, Tags: slices.Compact(tags)}, true, nil
}

// ParseTagList parses "<id> <class_index>..." lines with 0-based
// foreground class indices below numClasses, streaming from r. A list with
// no entries is an error.
func ParseTagList(name string, r io.Reader, numClasses int) ([]TagEntry, error) {
	var out []TagEntry
	err := eachTagLine(name, r, numClasses, func(e TagEntry) error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errNoImages(name)
	}
	return out, nil
}

// eachTagLine streams a tag list, checking every line and refusing a
// duplicate id, and calls fn with each entry.
func eachTagLine(name string, r io.Reader, numClasses int, fn func(TagEntry) error) error {
	seen := idLines{}
	return eachLine(name, r, func(n int, text string) error {
		e, ok, err := ParseTagLine(text, numClasses)
		if err != nil {
			return fmt.Errorf("%s:%d: %w", name, n, err)
		}
		if !ok {
			return nil
		}
		if err := seen.add(name, n, e.ID); err != nil {
			return err
		}
		return fn(e)
	})
}

type manifestLine struct {
	ID       string   `json:"id"`
	Image    string   `json:"image"`
	Tags     []string `json:"tags"`
	Saliency string   `json:"saliency"`
	GT       string   `json:"gt"`
}

// ParseManifest parses a JSON Lines manifest of
// {"id","image","tags":[names],"saliency","gt"} objects, streaming from r.
// Relative paths are resolved against base (the manifest's directory) and
// may not lead out of it; absolute paths and gs:// URIs are taken as
// given. A manifest with no entries is an error.
func ParseManifest(name string, r io.Reader, classes []string, base string) ([]Record, error) {
	var out []Record
	err := eachManifestLine(name, r, classes, base, func(rec Record) error {
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errNoImages(name)
	}
	return out, nil
}

// ParseManifestLine parses one manifest line into a record (see
// ParseManifest); ok is false for a blank line.
func ParseManifestLine(text string, classes []string, base string) (rec Record, ok bool, err error) {
	text = strings.TrimPrefix(strings.TrimRight(text, "\r"), "\ufeff")
	if strings.TrimSpace(text) == "" {
		return Record{}, false, nil
	}
	var m manifestLine
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Record{}, false, err
	}
	if err := ValidateID(m.ID); err != nil {
		return Record{}, false, err
	}
	if m.Image == "" {
		return Record{}, false, fmt.Errorf("%s has no image", m.ID)
	}
	var tags []int
	for _, t := range m.Tags {
		k := slices.Index(classes, t)
		if k < 0 {
			return Record{}, false, fmt.Errorf("unknown class %q of %s (known: %s)", t, m.ID, strings.Join(classes, ", "))
		}
		tags = append(tags, k)
	}
	slices.Sort(tags)
	rec = Record{ID: m.ID, Tags: slices.Compact(tags)}
	for _, f := range []struct {
		field string
		uri   string
		dst   *string
	}{{"image", m.Image, &rec.Image}, {"saliency", m.Saliency, &rec.Saliency}, {"gt", m.GT, &rec.GT}} {
		u, err := resolve(base, f.uri)
		if err != nil {
			return Record{}, false, fmt.Errorf("%s of %s: %w", f.field, m.ID, err)
		}
		*f.dst = u
	}
	return rec, true, nil
}

// eachManifestLine streams a manifest, checking every line and refusing a
// duplicate id, and calls fn with each record.
func eachManifestLine(name string, r io.Reader, classes []string, base string, fn func(Record) error) error {
	seen := idLines{}
	return eachLine(name, r, func(n int, text string) error {
		rec, ok, err := ParseManifestLine(text, classes, base)
		if err != nil {
			return fmt.Errorf("%s:%d: %w", name, n, err)
		}
		if !ok {
			return nil
		}
		if err := seen.add(name, n, rec.ID); err != nil {
			return err
		}
		return fn(rec)
	})
}

// resolve makes a manifest path a URI: absolute paths and remote URIs are
// explicit and kept; relative ones are joined to base and must stay
// inside it.
func resolve(base, uri string) (string, error) {
	if uri == "" || storage.IsRemote(uri) || filepath.IsAbs(uri) {
		return uri, nil
	}
	clean := path.Clean(filepath.ToSlash(uri))
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("relative path %q leads outside the manifest's directory (give an absolute path or a gs:// URI to read from elsewhere)", uri)
	}
	if base == "" {
		return clean, nil
	}
	return storage.Join(base, clean), nil
}

// newFingerprint starts the hash identifying a dataset: the class names,
// then the bytes of its tag list or manifest.
func newFingerprint(classes []string) hash.Hash {
	h := sha256.New()
	h.Write([]byte(strings.Join(classes, "\n")))
	h.Write([]byte{0})
	return h
}

// loadClasses reads classes.txt in dir, or returns the VOC classes when
// there is none.
func loadClasses(ctx context.Context, st *storage.Store, dir string) ([]string, error) {
	uri := storage.Join(dir, ClassesFile)
	data, err := st.ReadFile(ctx, uri, 1<<20)
	if errors.Is(err, storage.ErrNotExist) {
		return slices.Clone(VOCClasses), nil
	}
	if err != nil {
		return nil, err
	}
	return ParseClasses(uri, data)
}

// TagListURI is the tag list of a split under root.
func TagListURI(root, split string) string {
	return storage.Join(root, split+"_cls.txt")
}

// Load reads the layout under root for one split. It lists each of the
// image, ground-truth and saliency folders once (not one request an image)
// to find which files exist; an id without an image file still gets a
// record (its .jpg URI), so that the job reports it rather than dropping it.
func Load(ctx context.Context, st *storage.Store, root, split string) (*Dataset, error) {
	if strings.ContainsAny(split, `/\ `) || split == "" {
		return nil, inputErrorf("split %q: want a plain name such as train", split)
	}
	classes, err := loadClasses(ctx, st, root)
	if err != nil {
		return nil, err
	}
	listURI := TagListURI(root, split)
	var entries []TagEntry
	fp, err := streamList(ctx, st, listURI, classes, func(r io.Reader) (err error) {
		entries, err = ParseTagList(listURI, r, len(classes))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tag list of split %q: %w", split, err)
	}
	images, err := byID(ctx, st, storage.Join(root, ImageDir), ".jpg", ".jpeg", ".png")
	if err != nil {
		return nil, err
	}
	gts, err := byID(ctx, st, storage.Join(root, GTDir), ".png")
	if err != nil {
		return nil, err
	}
	sals, err := byID(ctx, st, storage.Join(root, SaliencyDir), ".png")
	if err != nil {
		return nil, err
	}
	ds := &Dataset{Classes: classes, Source: listURI, Fingerprint: fp}
	for _, e := range entries {
		img, ok := images[e.ID]
		if !ok {
			img = storage.Join(root, ImageDir, e.ID+".jpg")
		}
		ds.Records = append(ds.Records, Record{ID: e.ID, Image: img, Tags: e.Tags, GT: gts[e.ID], Saliency: sals[e.ID]})
	}
	return ds, nil
}

// byID lists dir once and maps ids (base names without extension) to URIs,
// keeping the first extension in exts order when several exist.
func byID(ctx context.Context, st *storage.Store, dir string, exts ...string) (map[string]string, error) {
	uris, err := st.List(ctx, dir, "*")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	rank := map[string]int{}
	for _, u := range uris {
		if strings.TrimSuffix(storage.Dir(u), "/") != strings.TrimSuffix(dir, "/") {
			continue // in a sub-folder
		}
		base := storage.Base(u)
		ext := strings.ToLower(path.Ext(base))
		r := slices.Index(exts, ext)
		if r < 0 {
			continue
		}
		id := strings.TrimSuffix(base, path.Ext(base))
		if prev, ok := rank[id]; !ok || r < prev {
			out[id], rank[id] = u, r
		}
	}
	return out, nil
}

// LoadManifest reads a JSON Lines manifest. Class names come from
// classes.txt beside the manifest, or are the VOC classes.
func LoadManifest(ctx context.Context, st *storage.Store, uri string) (*Dataset, error) {
	dir := storage.Dir(uri)
	classes, err := loadClasses(ctx, st, dir)
	if err != nil {
		return nil, err
	}
	var recs []Record
	fp, err := streamList(ctx, st, uri, classes, func(r io.Reader) (err error) {
		recs, err = ParseManifest(uri, r, classes, dir)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return &Dataset{Classes: classes, Records: recs, Source: uri, Fingerprint: fp}, nil
}

// streamList opens a list file and parses it as it is read, hashing the
// bytes on the way for the dataset fingerprint: a long list is never held
// in memory whole.
func streamList(ctx context.Context, st *storage.Store, uri string, classes []string, parse func(io.Reader) error) (string, error) {
	rc, err := st.Open(ctx, uri)
	if errors.Is(err, storage.ErrNotExist) {
		return "", &InputError{err}
	}
	if err != nil {
		return "", err
	}
	defer rc.Close()
	h := newFingerprint(classes)
	if err := parse(io.TeeReader(rc, h)); err != nil {
		return "", err
	}
	// Hash what the parser did not need to read (nothing, normally).
	if _, err := io.Copy(h, rc); err != nil {
		return "", fmt.Errorf("read %s: %w", uri, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Open loads a dataset from a manifest when one is given, else from the
// layout under root for the split.
func Open(ctx context.Context, st *storage.Store, root, split, manifest string) (*Dataset, error) {
	if manifest != "" {
		return LoadManifest(ctx, st, manifest)
	}
	return Load(ctx, st, root, split)
}

// FormatTagList renders entries as a tag list file.
func FormatTagList(entries []TagEntry) []byte {
	var b bytes.Buffer
	for _, e := range entries {
		b.WriteString(e.ID)
		for _, t := range e.Tags {
			b.WriteByte(' ')
			b.WriteString(strconv.Itoa(t))
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}
