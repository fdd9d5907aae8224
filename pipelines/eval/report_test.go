package eval

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/io/synth"
)

// chromium finds the browser; CI must have it (.ci/run installs it).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed (apt-get install chromium); the report test needs it in CI")
	}
	t.Skip("chromium not installed")
	return ""
}

// TestReportInBrowser writes a report and opens it in headless Chromium:
// the page's own check must find every image loaded and no script error;
// it also saves a screenshot (in $L2GFLOW_SCREENSHOTS, or the test's
// temporary folder).
func TestReportInBrowser(t *testing.T) {
	chromium(t)
	st := storage.New()
	defer st.Close()
	ctx := context.Background()
	root, out, report := t.TempDir(), t.TempDir(), t.TempDir()
	if _, err := synth.Write(ctx, st, root, synth.Options{Images: 24, Size: 64, Classes: 3, Seed: 4, NoSaliencyFraction: 0.3}); err != nil {
		t.Fatal(err)
	}
	ds, _ := dataset.Load(ctx, st, root, "train")
	writeLabels(t, st, ds, out)
	e := config.Default().Eval
	e.Labels, e.Report = out, report
	d := config.Default().Dataset
	d.Root = root
	m, err := Run(ctx, Options{Dataset: d, Eval: e, InProcess: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteReport(ctx, st, report, m, 4); err != nil {
		t.Fatal(err)
	}
	html := readReport(t, report)
	for _, want := range []string{"Per-class IoU", "Background threshold sweep", "<svg", "data:image/jpeg;base64,", "data:image/png;base64,",
		"What the labels hold", "Label colours"} {
		if !strings.Contains(html, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	openInBrowser(t, report, "report.png")
}

// readReport reads a written report page and checks it refers to nothing
// on the network.
func readReport(t *testing.T, report string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(report, ReportFile))
	if err != nil {
		t.Fatal(err)
	}
	html := string(raw)
	if regexp.MustCompile(`(src|href)="https?://`).MatchString(html) {
		t.Error("report refers to the network")
	}
	return html
}

// openInBrowser opens a report page in headless Chromium: the page's own
// check must find every image loaded and no script error; it saves a
// screenshot named shot (in $L2GFLOW_SCREENSHOTS, or the test's temporary
// folder).
func openInBrowser(t *testing.T, report, shot string) {
	t.Helper()
	browser := chromium(t)
	page := "file://" + filepath.Join(report, ReportFile)
	shots := os.Getenv("L2GFLOW_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0"}
	run := func(extra ...string) (string, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		args := append(append(append([]string{}, flags...), "--user-data-dir="+t.TempDir()), extra...)
		cmd := exec.CommandContext(ctx, browser, append(args, page)...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("chromium: %v\n%s", err, stderr.String())
		}
		return stdout.String(), stderr.String()
	}
	dom, logs := run("--dump-dom", "--virtual-time-budget=5000")
	body := regexp.MustCompile(`<body[^>]*>`).FindString(dom)
	if !strings.Contains(body, `data-images="ok"`) || !strings.Contains(body, `data-errors="0"`) {
		t.Errorf("page self-check failed: %s", body)
	}
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "CONSOLE") && strings.Contains(strings.ToLower(line), "error") {
			t.Errorf("console error: %s", line)
		}
	}
	path := filepath.Join(shots, shot)
	run("--window-size=1200,1800", "--screenshot="+path)
	if st, err := os.Stat(path); err != nil || st.Size() < 10000 {
		t.Errorf("screenshot %s: %v", path, err)
	} else {
		t.Logf("screenshot: %s", path)
	}
}
