package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/l2gflow/l2gflow/io/artifact"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/synth"
	"github.com/l2gflow/l2gflow/transforms"
)

// cli runs the l2gflow command line in-process.
func cli(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String() + stderr.String()
}

// corpusOptions is the small synthetic set the corpus is added to.
var corpusOptions = synth.Options{Images: 14, Size: 48, Classes: 3, Seed: 4}

// writeSynth writes a synthetic dataset under root.
func writeSynth(t *testing.T, root string, opts synth.Options) {
	t.Helper()
	st := storage.New()
	defer st.Close()
	if _, err := synth.Write(context.Background(), st, root, opts); err != nil {
		t.Fatal(err)
	}
}

// caseID is the dataset id of a corpus case.
func caseID(name string) string {
	return "bad_" + regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(name, "_")
}

// addImageCases adds each image-level case to the train split under root
// as one more image, and returns the cases by id.
func addImageCases(t *testing.T, root string) map[string]synth.ImageCase {
	t.Helper()
	good := synth.Generate(corpusOptions, 0)
	cases, err := synth.BadImages(good)
	if err != nil {
		t.Fatal(err)
	}
	gt, _ := imagefile.EncodeLabel(good.GT)
	list, err := os.ReadFile(filepath.Join(root, "train_cls.txt"))
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]synth.ImageCase{}
	for _, c := range cases {
		id := caseID(c.Name)
		byID[id] = c
		write := func(dir, ext string, data []byte) {
			if err := os.WriteFile(filepath.Join(root, dir, id+ext), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if c.Image != nil {
			write(dataset.ImageDir, c.Ext, c.Image)
		}
		if c.Saliency != nil {
			write(dataset.SaliencyDir, ".png", c.Saliency)
		}
		if c.GT != nil {
			write(dataset.GTDir, ".png", c.GT)
		} else if c.W != 1 {
			write(dataset.GTDir, ".png", gt)
		}
		entry := dataset.TagEntry{ID: id, Tags: good.Tags}
		if c.NoTags {
			entry.Tags = nil
		}
		list = append(list, dataset.FormatTagList([]dataset.TagEntry{entry})...)
	}
	if err := os.WriteFile(filepath.Join(root, "train_cls.txt"), list, 0o644); err != nil {
		t.Fatal(err)
	}
	return byID
}

// pngLabels reads the labels of an output directory by id.
func pngLabels(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	out := map[string][]byte{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".png")] = data
	}
	return out
}

// deadLetters reads OUT/_errors.jsonl by id.
func deadLetters(t *testing.T, dir string) map[string]transforms.DeadLetter {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, transforms.ErrorsFile))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[string]transforms.DeadLetter{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var d transforms.DeadLetter
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatalf("dead letter %q: %v", line, err)
		}
		out[d.ID] = d
	}
	return out
}

// TestBadInputCorpus runs the bad-input corpus through label, train and
// eval. Image-level cases sit among good images in one dataset: each is
// processed or dead-lettered with its reason, and every good image gets
// the same label as in a run without the bad ones. Dataset- and
// model-level cases are separate variants that must be refused at start
// with a message naming the fault, writing nothing.
func TestBadInputCorpus(t *testing.T) {
	dir := t.TempDir()
	clean, bad := filepath.Join(dir, "clean"), filepath.Join(dir, "bad")
	writeSynth(t, clean, corpusOptions)
	writeSynth(t, bad, corpusOptions)
	modelPath := filepath.Join(dir, "m.l2g")
	train := []string{"train", "--method", "cam", "--steps", "4", "--image-size", "48", "--view-size", "32", "--views", "4",
		"--batch-size", "4", "--checkpoint-every", "0", "--out", modelPath}
	if code, out := cli(t, append(train, "--data", clean)...); code != 0 {
		t.Fatalf("train: exit %d\n%s", code, out)
	}
	cases := addImageCases(t, bad)
	labelArgs := []string{"label", "--model", modelPath, "--background", "saliency", "--batch-size", "4"}

	cleanOut, badOut := filepath.Join(dir, "labels-clean"), filepath.Join(dir, "labels-bad")
	if code, out := cli(t, append(labelArgs, "--data", clean, "--out", cleanOut)...); code != 0 {
		t.Fatalf("label clean: exit %d\n%s", code, out)
	}
	code, out := cli(t, append(labelArgs, "--data", bad, "--out", badOut)...)
	if code != 0 {
		t.Fatalf("label with bad inputs: exit %d (want 0: bad images are dead letters)\n%s", code, out)
	}
	want, got, dead := pngLabels(t, cleanOut), pngLabels(t, badOut), deadLetters(t, badOut)
	for id, b := range want {
		if !bytes.Equal(got[id], b) {
			t.Errorf("%s: good image labelled differently next to bad inputs", id)
		}
	}
	for id, c := range cases {
		switch c.Expect {
		case synth.Processed:
			lab, err := imagefile.DecodeLabel(got[id], 0)
			if err != nil {
				t.Errorf("%s (%s): no usable label: %v; dead letter %+v", c.Name, id, err, dead[id])
				continue
			}
			if lab.W != c.W || lab.H != c.H {
				t.Errorf("%s: label %dx%d, want %dx%d", c.Name, lab.W, lab.H, c.W, c.H)
			}
			for _, v := range lab.Pix {
				if c.NoTags && v != 0 && v != imagefile.Ignore {
					t.Fatalf("%s: class %d in the label of an image without tags", c.Name, v)
				}
				if v > 3 && v != imagefile.Ignore {
					t.Fatalf("%s: label value %d", c.Name, v)
				}
			}
		case synth.DeadLetter:
			if _, ok := got[id]; ok {
				t.Errorf("%s: labelled, want a dead letter", c.Name)
			}
			d, ok := dead[id]
			if !ok || d.Stage != transforms.StageLoad || !strings.Contains(d.Reason, c.Reason) {
				t.Errorf("%s: dead letter %+v, want stage %s with %q", c.Name, d, transforms.StageLoad, c.Reason)
			}
			if file := id + c.Ext; !strings.Contains(d.Reason, file) {
				t.Errorf("%s: dead letter %q does not name the file %s", c.Name, d.Reason, file)
			}
		}
	}
	if len(dead) != countExpect(cases, synth.DeadLetter) {
		t.Errorf("%d dead letters, want %d: %v", len(dead), countExpect(cases, synth.DeadLetter), dead)
	}

	// Evaluation lists what it cannot score, with the reason.
	report := filepath.Join(dir, "report")
	if code, out := cli(t, "eval", "--data", bad, "--labels", badOut, "--report", report); code != 0 {
		t.Fatalf("eval: exit %d\n%s", code, out)
	}
	var metrics struct {
		MissingLabels []string                `json:"missing_labels"`
		Errors        []transforms.DeadLetter `json:"errors"`
		Images        int                     `json:"images"`
	}
	raw, _ := os.ReadFile(filepath.Join(report, "metrics.json"))
	if err := json.Unmarshal(raw, &metrics); err != nil {
		t.Fatal(err)
	}
	if len(metrics.MissingLabels) != countExpect(cases, synth.DeadLetter) {
		t.Errorf("eval: missing labels %v, want the %d dead-lettered images", metrics.MissingLabels, countExpect(cases, synth.DeadLetter))
	}
	goodImg := synth.Generate(corpusOptions, 0).Image
	if len(metrics.Errors) != 1 || metrics.Errors[0].ID != caseID("ground truth of another size") || !strings.Contains(metrics.Errors[0].Reason, fmt.Sprintf("label is %dx%d, ground truth %dx%d", goodImg.W, goodImg.H, goodImg.W+5, goodImg.H)) {
		t.Errorf("eval errors %+v: want the ground truth of another size, with its reason", metrics.Errors)
	}

	// Training goes on past unreadable images and says how many.
	code, out = cli(t, append(train[:len(train)-1], filepath.Join(dir, "m2.l2g"), "--data", bad)...)
	if code != 0 || !strings.Contains(out, "unreadable training image") {
		t.Errorf("train with bad inputs: exit %d, want 0 and a warning about unreadable images\n%s", code, out)
	}

	// Dataset-level faults, each a split (or manifest) of the bad root.
	good := synth.Generate(corpusOptions, 0)
	goodLine := good.ID + " 0\n"
	splits := map[string]string{
		"dup":     goodLine + goodLine,
		"dotdot":  goodLine + "../etc/passwd 0\n",
		"slash":   "a/b 0\n" + goodLine,
		"range":   good.ID + " 7\n",
		"notint":  good.ID + " one\n",
		"empty":   "",
		"blank":   "\n  \n",
		"crlfbom": "\xef\xbb\xbf" + strings.TrimSuffix(goodLine, "\n") + "\r\n",
	}
	for split, text := range splits {
		if err := os.WriteFile(filepath.Join(bad, split+"_cls.txt"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	manifest := func(name, text string) string {
		p := filepath.Join(bad, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodJSON := `{"id":"a","image":"JPEGImages/` + good.ID + `.jpg","tags":["red"]}` + "\n"
	modelData, err := os.ReadFile(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	badModel := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flipped := bytes.Clone(modelData)
	flipped[len(flipped)-100] ^= 0x10
	m, ts, err := artifact.Decode(modelData)
	if err != nil {
		t.Fatal(err)
	}
	m.FormatVersion = artifact.FormatVersion + 1
	future, err := artifact.Marshal(m, ts)
	if err != nil {
		t.Fatal(err)
	}
	otherClasses := filepath.Join(dir, "other")
	fourClasses := corpusOptions
	fourClasses.Classes = 4
	writeSynth(t, otherClasses, fourClasses)
	refusals := []struct {
		name string
		args []string
		want []string // substrings of the message
		ok   bool     // processed instead of refused
	}{
		{"duplicate id", []string{"--data", bad, "--split", "dup"}, []string{"dup_cls.txt:2", "duplicate id"}, false},
		{"id with ..", []string{"--data", bad, "--split", "dotdot"}, []string{"dotdot_cls.txt:2", ".."}, false},
		{"id with /", []string{"--data", bad, "--split", "slash"}, []string{"slash_cls.txt:1", "path separator"}, false},
		{"tag index out of range", []string{"--data", bad, "--split", "range"}, []string{"range_cls.txt:1", "outside 0..2"}, false},
		{"tag not an integer", []string{"--data", bad, "--split", "notint"}, []string{"notint_cls.txt:1", "not an integer"}, false},
		{"empty tag list file", []string{"--data", bad, "--split", "empty"}, []string{"empty_cls.txt", "no images"}, false},
		{"blank tag list file", []string{"--data", bad, "--split", "blank"}, []string{"blank_cls.txt", "no images"}, false},
		{"CRLF and BOM list", []string{"--data", bad, "--split", "crlfbom"}, nil, true},
		{"unknown class in manifest", []string{"--manifest", manifest("unknown.jsonl", goodJSON+`{"id":"b","image":"x.jpg","tags":["plaid"]}`+"\n")}, []string{"unknown.jsonl:2", `unknown class "plaid"`}, false},
		{"malformed manifest line", []string{"--manifest", manifest("broken.jsonl", goodJSON+`{"id":"b","image":`+"\n")}, []string{"broken.jsonl:2"}, false},
		{"manifest path leaving its directory", []string{"--manifest", manifest("escape.jsonl", `{"id":"b","image":"../../secret.jpg","tags":["red"]}`+"\n")}, []string{"escape.jsonl:1", "outside"}, false},
		{"model truncated", []string{"--data", bad, "--model", badModel("trunc.l2g", modelData[:len(modelData)/2])}, []string{"trunc.l2g", "corrupt or truncated"}, false},
		{"model bit-flipped", []string{"--data", bad, "--model", badModel("flip.l2g", flipped)}, []string{"flip.l2g", "corrupt"}, false},
		{"model of a future format", []string{"--data", bad, "--model", badModel("future.l2g", future)}, []string{"future.l2g", fmt.Sprintf("format version %d", artifact.FormatVersion+1)}, false},
		{"model for other classes", []string{"--data", otherClasses}, []string{"3 classes", "dataset 4"}, false},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "labels")
			args := append([]string{"label", "--model", modelPath, "--out", out}, tc.args...)
			code, msg := cli(t, args...)
			if tc.ok {
				if code != 0 || len(pngLabels(t, out)) != 1 {
					t.Fatalf("exit %d, %d labels; want 0 and 1\n%s", code, len(pngLabels(t, out)), msg)
				}
				return
			}
			if code == 0 {
				t.Fatalf("exit 0, want a refusal\n%s", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message does not contain %q:\n%s", w, msg)
				}
			}
			if entries, _ := os.ReadDir(out); len(entries) > 0 {
				t.Errorf("a refused run wrote %d entries to its output", len(entries))
			}
			if strings.HasPrefix(tc.name, "model") {
				return
			}
			// Training reads datasets the same way and refuses them alike.
			trainOut := filepath.Join(t.TempDir(), "m.l2g")
			code, msg = cli(t, append(append(train[:len(train)-1], trainOut), tc.args...)...)
			if code == 0 {
				t.Fatalf("train: exit 0, want a refusal\n%s", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("train: message does not contain %q:\n%s", w, msg)
				}
			}
			if _, err := os.Stat(trainOut); err == nil {
				t.Error("a refused training run wrote a model")
			}
		})
	}
}

// TestCredentialsNeverPrinted gives label a manifest with a signed URL
// holding a password, a signature and a credential: the image is
// dead-lettered (unsupported scheme) and no output, log or file of the
// run shows the secrets.
func TestCredentialsNeverPrinted(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "data")
	writeSynth(t, root, corpusOptions)
	modelPath := filepath.Join(dir, "m.l2g")
	if code, out := cli(t, "train", "--data", root, "--method", "cam", "--steps", "1", "--image-size", "48", "--view-size", "32",
		"--views", "4", "--batch-size", "4", "--checkpoint-every", "0", "--out", modelPath); code != 0 {
		t.Fatalf("train: exit %d\n%s", code, out)
	}
	good := synth.Generate(corpusOptions, 0)
	secrets := []string{"hunter2", "SECRETSIG", "svc-account"}
	manifest := filepath.Join(root, "signed.jsonl")
	text := `{"id":"a","image":"JPEGImages/` + good.ID + `.jpg","tags":["red"]}` + "\n" +
		`{"id":"s","image":"https://user:hunter2@storage.example.com/b/s.jpg?X-Goog-Signature=SECRETSIG&X-Goog-Credential=svc-account","tags":["red"]}` + "\n"
	if err := os.WriteFile(manifest, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "labels")
	code, msg := cli(t, "label", "--model", modelPath, "--out", out, "--manifest", manifest, "--verbose")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, msg)
	}
	if d := deadLetters(t, out)["s"]; !strings.Contains(d.Reason, "unsupported scheme") || !strings.Contains(d.Reason, "REDACTED") {
		t.Errorf("dead letter %+v: want the unsupported scheme, redacted", d)
	}
	texts := map[string]string{"output": msg}
	filepath.WalkDir(out, func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && !strings.HasSuffix(p, ".png") {
			b, _ := os.ReadFile(p)
			texts[p] = string(b)
		}
		return nil
	})
	for name, text := range texts {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s shows the secret %q:\n%s", name, s, text)
			}
		}
	}
}

func countExpect(cases map[string]synth.ImageCase, o synth.Outcome) int {
	n := 0
	for _, c := range cases {
		if c.Expect == o {
			n++
		}
	}
	return n
}
