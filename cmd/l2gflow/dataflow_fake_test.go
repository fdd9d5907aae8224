package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/storage/gcstest"
	"github.com/l2gflow/l2gflow/model/trainer/trainertest"
	"github.com/l2gflow/l2gflow/transforms"
)

// dataflowFixture puts a small dataset and model into the GCS emulator,
// writes a stand-in worker binary, and restores Beam's process-wide flags
// after the test.
func dataflowFixture(t *testing.T, bucket string) (worker string) {
	t.Helper()
	gcstest.Start(t, bucket)
	ctx := context.Background()
	st := storage.New()
	defer st.Close()
	root := "gs://" + bucket + "/data"
	if _, err := trainertest.Write(ctx, st, root, "gs://"+bucket+"/m.l2g", trainertest.Options{Images: 12, Size: 64, Seed: 2,
		ViewSize: 48, BatchSize: 8}); err != nil {
		t.Fatal(err)
	}
	worker = filepath.Join(t.TempDir(), "worker")
	os.WriteFile(worker, []byte("stand-in worker binary"), 0o755)
	for _, name := range []string{"runner", "dry_run", "project", "region", "staging_location", "temp_location",
		"worker_machine_type", "max_num_workers", "worker_binary", "sdk_container_image", "template_location", "async",
		"dataflow_endpoint"} {
		f := flag.CommandLine.Lookup(name)
		if f == nil {
			t.Fatalf("Beam flag --%s is not registered", name)
		}
		old := f.Value.String()
		t.Cleanup(func() { flag.CommandLine.Set(name, old) })
	}
	return worker
}

// withStderr runs fn with the process's stderr (where Beam's Dataflow
// runner logs the job) captured, and returns what it wrote.
func withStderr(t *testing.T, fn func()) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = f
	fn()
	os.Stderr = saved
	f.Close()
	raw, _ := os.ReadFile(f.Name())
	return string(raw)
}

// TestDataflowJobSizeDoesNotGrowWithTheList builds the Dataflow job for
// lists of 240 and 2,400 images offline (--dry_run): the job reads its
// list, so its printed graph is the same size (within 30%) for both.
func TestDataflowJobSizeDoesNotGrowWithTheList(t *testing.T) {
	worker := dataflowFixture(t, "size")
	ctx := context.Background()
	st := storage.New()
	defer st.Close()
	size := map[int]int{}
	for _, n := range []int{240, 2400} {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "img_%06d %d\n", i, i%3)
		}
		split := fmt.Sprintf("list%d", n)
		if err := st.WriteFile(ctx, "gs://size/data/"+split+"_cls.txt", []byte(b.String())); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		var code int
		log := withStderr(t, func() {
			code = run(ctx, []string{"label", "--runner", "dataflow", "--dry_run", "--project", "p", "--region", "europe-west4",
				"--staging_location", "gs://size/staging", "--temp_location", "gs://size/tmp", "--worker_binary", worker,
				"--model", "gs://size/m.l2g", "--data", "gs://size/data", "--split", split, "--out", "gs://size/labels", "--verbose"},
				&stdout, &stderr)
		})
		if code != 0 {
			t.Fatalf("%d images: exit %d\n%s%s", n, code, stderr.String(), log)
		}
		i := strings.Index(log, "Dry-run")
		if i < 0 {
			t.Fatalf("%d images: no dry-run job printed:\n%s", n, log)
		}
		size[n] = len(log) - i
	}
	t.Logf("printed job: %d bytes for 240 images, %d for 2,400", size[240], size[2400])
	if r := float64(size[2400]) / float64(size[240]); r > 1.3 || r < 1/1.3 {
		t.Errorf("the job grows with the list: %d bytes for 240 images, %d for 2,400", size[240], size[2400])
	}
}

// TestDataflowTemplate writes a template (staging on the GCS emulator):
// the launcher exits 0 saying where the template is, and runs nothing.
func TestDataflowTemplate(t *testing.T) {
	worker := dataflowFixture(t, "tpl")
	ctx := context.Background()
	var stdout, stderr bytes.Buffer
	var code int
	withStderr(t, func() {
		code = run(ctx, []string{"label", "--runner", "dataflow", "--template_location", "gs://tpl/templates/label.json",
			"--project", "p", "--region", "europe-west4", "--staging_location", "gs://tpl/staging", "--temp_location", "gs://tpl/tmp",
			"--worker_binary", worker, "--model", "gs://tpl/m.l2g", "--data", "gs://tpl/data", "--split", "train",
			"--out", "gs://tpl/labels"}, &stdout, &stderr)
	})
	if code != 0 || !strings.Contains(stdout.String(), "template written to gs://tpl/templates/label.json") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout.String(), stderr.String())
	}
	st := storage.New()
	defer st.Close()
	raw, err := st.ReadFile(ctx, "gs://tpl/templates/label.json", 0)
	var job map[string]any
	if err != nil || json.Unmarshal(raw, &job) != nil || !bytes.Contains(raw, []byte("gs://tpl/staging")) {
		t.Errorf("template: %v\n%s", err, raw)
	}
	if l, _ := st.List(ctx, "gs://tpl/labels", "*"); len(l) != 0 {
		t.Errorf("writing a template wrote into the output: %v", l)
	}
}

// fakeDataflow is a stand-in for the Dataflow API and Google's token
// endpoint: jobs are created, run for a few polls, and (when done) leave
// the run record a real job writes.
type fakeDataflow struct {
	srv     *httptest.Server
	mu      sync.Mutex
	created int
	polls   int
	onDone  func()
}

func startFakeDataflow(t *testing.T) *fakeDataflow {
	t.Helper()
	f := &fakeDataflow{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/token":
			fmt.Fprint(w, `{"access_token":"fake","token_type":"Bearer","expires_in":3600}`)
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/jobs"):
			f.created++
			fmt.Fprint(w, `{"id":"job-42","name":"l2gflow","currentState":"JOB_STATE_PENDING"}`)
		case strings.HasSuffix(r.URL.Path, "/jobs/job-42/metrics"):
			fmt.Fprintf(w, `{"metrics":[{"name":{"origin":"user","name":"labels_written","context":{"namespace":"l2gflow","step":"s9"}},"scalar":%d}]}`, 4*f.polls)
		case strings.HasSuffix(r.URL.Path, "/jobs/job-42"):
			f.polls++
			state := "JOB_STATE_RUNNING"
			if f.polls >= 3 {
				state = "JOB_STATE_DONE"
				if f.onDone != nil {
					f.onDone()
					f.onDone = nil
				}
			}
			fmt.Fprintf(w, `{"id":"job-42","currentState":%q}`, state)
		default:
			http.Error(w, "not faked: "+r.Method+" "+r.URL.Path, http.StatusNotFound)
		}
	}))
	t.Cleanup(f.srv.Close)
	// Credentials whose token comes from the fake: a service account key
	// made here.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	cred, _ := json.Marshal(map[string]string{"type": "service_account", "project_id": "p", "private_key_id": "k1",
		"private_key": string(pemKey), "client_email": "l2gflow@p.iam.gserviceaccount.com", "client_id": "1",
		"token_uri": f.srv.URL + "/token"})
	path := filepath.Join(t.TempDir(), "cred.json")
	os.WriteFile(path, cred, 0o600)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", path)
	return f
}

// TestDataflowAsyncAndWait submits the job to a fake Dataflow endpoint:
// with --async the launcher returns the job id and console URL at once
// and records the submission; without it, the launcher follows the job,
// prints progress from the job's metrics and reports the run record the
// job wrote.
func TestDataflowAsyncAndWait(t *testing.T) {
	worker := dataflowFixture(t, "dfa")
	fake := startFakeDataflow(t)
	ctx := context.Background()
	base := []string{"label", "--runner", "dataflow", "--project", "p", "--region", "europe-west4",
		"--staging_location", "gs://dfa/staging", "--temp_location", "gs://dfa/tmp", "--worker_binary", worker,
		"--dataflow_endpoint", fake.srv.URL + "/", "--model", "gs://dfa/m.l2g", "--data", "gs://dfa/data", "--split", "train",
		"--out", "gs://dfa/labels", "--progress-every", "10ms"}
	st := storage.New()
	defer st.Close()

	var stdout, stderr bytes.Buffer
	var code int
	withStderr(t, func() { code = run(ctx, append(base, "--async", "--run-id", "nightly-1"), &stdout, &stderr) })
	if code != 0 || !strings.Contains(stdout.String(), "job job-42 submitted") ||
		!strings.Contains(stdout.String(), "console.cloud.google.com/dataflow/jobs/europe-west4/job-42") {
		t.Fatalf("async: exit %d\nstdout: %s\nstderr: %s", code, stdout.String(), stderr.String())
	}
	raw, err := st.ReadFile(ctx, "gs://dfa/labels/_runs/nightly-1.submitted.json", 0)
	if err != nil || !bytes.Contains(raw, []byte(`"job": "job-42"`)) {
		t.Errorf("submission record: %v %s", err, raw)
	}

	// Waiting: the fake job "writes" its run record when it is done.
	fake.onDone = func() {
		rec := transforms.RunRecord{RunID: "nightly-2", Runner: "dataflow", Counts: transforms.Counts{Listed: 12, Submitted: 12,
			ImagesRead: 12, LabelsWritten: 12}}
		raw, _ := json.Marshal(rec)
		if err := st.WriteFile(context.Background(), "gs://dfa/labels/_runs/nightly-2.json", raw); err != nil {
			t.Error(err)
		}
	}
	stdout.Reset()
	stderr.Reset()
	start := time.Now()
	withStderr(t, func() { code = run(ctx, append(base, "--run-id", "nightly-2"), &stdout, &stderr) })
	if code != 0 || !strings.Contains(stdout.String(), "12 labels written to gs://dfa/labels") {
		t.Fatalf("wait: exit %d\nstdout: %s\nstderr: %s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "JOB_STATE_RUNNING: 4/12 written") {
		t.Errorf("no progress from the job's metrics:\n%s", stderr.String())
	}
	t.Logf("followed the fake job in %v; %d jobs created", time.Since(start), fake.created)
}
