package dataset

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/l2gflow/l2gflow/io/storage"
)

// Source says where a dataset's records come from and how one line of
// its list becomes a record, so that a pipeline can read the list itself
// (sharded, line by line) instead of receiving every record from the
// process that launched it. It is plain data (JSON), fit to pass to Beam
// workers.
type Source struct {
	// List is the URI of the tag list or the manifest.
	List string `json:"list"`
	// Manifest is true for a JSON Lines manifest, false for a tag list.
	Manifest bool `json:"manifest,omitempty"`
	// Root is the dataset root of a tag list.
	Root string `json:"root,omitempty"`
	// Base resolves a manifest's relative paths (its directory).
	Base    string   `json:"base,omitempty"`
	Classes []string `json:"classes"`
}

// Info is what checking a list found.
type Info struct {
	Classes []string
	// Listed is the number of records.
	Listed int
	// Fingerprint is the sha256 of the class names and the list's bytes.
	Fingerprint string
}

// Record parses one line of the source's list: a tag list line gives a
// record whose URIs follow the layout (Probe set: ROOT/JPEGImages/<id>.jpg
// or another image extension, ROOT/Saliency/<id>.png and
// ROOT/SegmentationClass/<id>.png when they exist); a manifest line gives
// its own URIs. ok is false for a blank line.
func (s Source) Record(line string) (Record, bool, error) {
	if s.Manifest {
		return ParseManifestLine(line, s.Classes, s.Base)
	}
	e, ok, err := ParseTagLine(line, len(s.Classes))
	if !ok || err != nil {
		return Record{}, ok, err
	}
	return Record{ID: e.ID, Tags: e.Tags, Probe: true,
		Image:    storage.Join(s.Root, ImageDir, e.ID+ImageExtensions[0]),
		Saliency: storage.Join(s.Root, SaliencyDir, e.ID+".png"),
		GT:       storage.Join(s.Root, GTDir, e.ID+".png")}, true, nil
}

// OpenSource checks a dataset's list without keeping its records: it
// reads the class names, streams the tag list of split under root (or
// the manifest, when one is given) once, and refuses a bad line with
// FILE:LINE, a duplicate id, or an empty list. It returns the source a
// pipeline reads the records from.
func OpenSource(ctx context.Context, st *storage.Store, root, split, manifest string) (Source, Info, error) {
	var src Source
	if manifest != "" {
		src = Source{List: manifest, Manifest: true, Base: storage.Dir(manifest)}
	} else {
		if strings.ContainsAny(split, `/\ `) || split == "" {
			return Source{}, Info{}, inputErrorf("split %q: want a plain name such as train", split)
		}
		src = Source{List: TagListURI(root, split), Root: root}
	}
	classDir := root
	if src.Manifest {
		classDir = src.Base
	}
	classes, err := loadClasses(ctx, st, classDir)
	if err != nil {
		return Source{}, Info{}, err
	}
	src.Classes = classes
	n := 0
	fp, err := streamList(ctx, st, src.List, classes, func(r io.Reader) error {
		count := func(any) error { n++; return nil }
		if src.Manifest {
			return eachManifestLine(src.List, r, classes, src.Base, func(rec Record) error { return count(rec) })
		}
		return eachTagLine(src.List, r, len(classes), func(e TagEntry) error { return count(e) })
	})
	if err == nil && n == 0 {
		err = errNoImages(src.List)
	}
	if err != nil {
		if src.Manifest {
			return Source{}, Info{}, fmt.Errorf("manifest: %w", err)
		}
		return Source{}, Info{}, fmt.Errorf("tag list of split %q: %w", split, err)
	}
	return src, Info{Classes: classes, Listed: n, Fingerprint: fp}, nil
}
