package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/l2gflow/l2gflow/io/storage"
)

// workerBinaryEnv names the binary make worker built (make test sets it),
// which the launcher test copies instead of building its own.
const workerBinaryEnv = "L2GFLOW_WORKER_BINARY"

// buildL2gflow puts this command, built as make worker builds it, at path.
func buildL2gflow(t *testing.T, path string) {
	t.Helper()
	if built := os.Getenv(workerBinaryEnv); built != "" {
		data, err := os.ReadFile(built)
		if err != nil {
			t.Fatalf("%s: %v", workerBinaryEnv, err)
		}
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, data, 0o755); err != nil {
			t.Fatal(err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
}

// dockerfileEnv reads the ENV lines of a Dockerfile, expanding ${NAME}
// references to earlier ones, with the image's /template folder (where the
// Dockerfile copies the binary) mapped to root.
func dockerfileEnv(t *testing.T, path, root string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	image := map[string]string{} // as in the image
	line := regexp.MustCompile(`^ENV\s+([A-Za-z_][A-Za-z0-9_]*)=(.*)$`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := line.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		image[m[1]] = os.Expand(strings.Trim(m[2], `"`), func(name string) string { return image[name] })
	}
	if len(image) == 0 {
		t.Fatalf("%s has no ENV lines", path)
	}
	env := map[string]string{}
	for k, v := range image {
		env[k] = strings.ReplaceAll(v, "/template/", root+"/template/")
	}
	return env
}

// sha256File hashes a file.
func sha256File(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// TestFlexTemplateLaunch runs l2gflow as the Dataflow Flex Template
// launcher runs it: the binary named by FLEX_TEMPLATE_GO_BINARY, the
// environment of flex/Dockerfile's ENV lines, a PATH without a Go
// toolchain, the parameters of flex/metadata.json as --name=value
// arguments with the pipeline options the launcher adds, against the fake
// Dataflow API and the GCS emulator. The job must be submitted with the
// binary itself staged as the workers' binary. The classic template is
// written the same way.
func TestFlexTemplateLaunch(t *testing.T) {
	if testing.Short() {
		t.Skip("builds l2gflow")
	}
	dataflowFixture(t, "flex")
	fake := startFakeDataflow(t)
	root := t.TempDir()
	env := dockerfileEnv(t, "../../flex/Dockerfile", root)
	bin := env["FLEX_TEMPLATE_GO_BINARY"]
	if bin == "" || !strings.HasPrefix(bin, root) {
		t.Fatalf("flex/Dockerfile sets no FLEX_TEMPLATE_GO_BINARY under /template: %v", env)
	}
	buildL2gflow(t, bin)

	// The launcher's environment: the image's ENV lines, no Go on PATH,
	// and this test's stand-ins for Google's services.
	noGo := t.TempDir()
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	environ = append(environ, "PATH="+noGo+":/usr/bin:/bin", "HOME="+t.TempDir(),
		"STORAGE_EMULATOR_HOST="+os.Getenv("STORAGE_EMULATOR_HOST"), "GCE_METADATA_HOST="+os.Getenv("GCE_METADATA_HOST"),
		"GOOGLE_APPLICATION_CREDENTIALS="+os.Getenv("GOOGLE_APPLICATION_CREDENTIALS"))
	for _, dir := range []string{noGo, "/usr/bin", "/bin"} {
		if _, err := os.Stat(filepath.Join(dir, "go")); err == nil {
			t.Fatalf("%s/go exists: the launcher's PATH would have a Go toolchain", dir)
		}
	}

	// The template's parameters, as the scheduler example in the README
	// gives them, and what the launcher adds.
	raw, err := os.ReadFile("../../flex/metadata.json")
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Parameters []struct {
			Name string `json:"name"`
		} `json:"parameters"`
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatal(err)
	}
	values := map[string]string{"model": "gs://flex/m.l2g", "data": "gs://flex/data", "split": "train",
		"out": "gs://flex/labels", "incremental": "true", "max-failures": "1%", "run-id": "nightly-7"}
	var params []string
	for _, p := range meta.Parameters {
		if v, ok := values[p.Name]; ok {
			params = append(params, "--"+p.Name+"="+v)
			delete(values, p.Name)
		}
	}
	if len(values) != 0 {
		t.Fatalf("flex/metadata.json lacks parameters %v", values)
	}
	launcher := []string{"--project=p", "--region=europe-west4", "--job_name=l2gflow-nightly",
		"--temp_location=gs://flex/tmp", "--staging_location=gs://flex/staging", "--dataflow_endpoint=" + fake.srv.URL + "/"}

	launch := func(args ...string) (int, string, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env, cmd.Dir = environ, filepath.Dir(bin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, stdout.String(), stderr.String()
	}
	stagedBinary := func(prefix string) bool {
		st := storage.New()
		defer st.Close()
		want := sha256File(t, bin)
		objs, err := st.List(context.Background(), prefix, "*")
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			data, err := st.ReadFile(context.Background(), o, 0)
			if err == nil && sha256.Sum256(data) == want {
				return true
			}
		}
		t.Logf("objects under %s: %v", prefix, objs)
		return false
	}

	code, stdout, stderr := launch(append(params, launcher...)...)
	if code != 0 || !strings.Contains(stdout, "job job-42 submitted") {
		t.Fatalf("Flex Template launch: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if strings.Contains(stderr, "cross-compile") {
		t.Errorf("the launcher tried to compile a worker:\n%s", stderr)
	}
	if fake.created != 1 {
		t.Errorf("%d jobs created, want 1", fake.created)
	}
	if !stagedBinary("gs://flex/staging") {
		t.Error("the launcher's own binary was not staged as the workers' binary")
	}

	// A classic template, written by a launch without a Go toolchain.
	code, stdout, stderr = launch(append(append(params, launcher...), "--template_location=gs://flex/templates/label.json")...)
	if code != 0 || !strings.Contains(stdout, "template written to gs://flex/templates/label.json") {
		t.Fatalf("classic template: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}

	// Tau T2A workers are arm64: refused with what to do, before any job.
	code, _, stderr = launch(append(append(params, launcher...), "--worker_binary=", "--worker_machine_type=t2a-standard-8")...)
	if code == 0 || !strings.Contains(stderr, "make worker-arm64") {
		t.Errorf("T2A workers with an amd64 binary: exit %d\n%s", code, stderr)
	}
}
