package eval

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"image"
	"image/color"
	_ "image/jpeg" // DecodeConfig of embedded images
	"image/png"
	"math"
	"strings"

	"github.com/l2gflow/l2gflow/config"
	"github.com/l2gflow/l2gflow/io/dataset"
	"github.com/l2gflow/l2gflow/io/imagefile"
	"github.com/l2gflow/l2gflow/io/storage"
	"github.com/l2gflow/l2gflow/transforms"
)

// ReportFile is the report page's name in the report folder.
const ReportFile = "report.html"

// cell is one picture (or a note where there is none) of a sample row.
type cell struct {
	Title string
	Src   template.URL // data URI
	Note  string
}

type sampleRow struct {
	ID   string
	Tags string
	// Mark is set on the worst images (with their mIoU) and on flagged
	// ones (with the flag).
	Mark  string
	Cells []cell
}

type bar struct {
	Name   string
	Label  string // the value as shown, "-" where undefined
	Width  float64
	Y      int
	Colour string // CSS colour; "" for the default
}

type swatch struct {
	Name   string
	Colour string
}

type deadLetterRow struct{ ID, Stage, Reason string }

type reportData struct {
	Title       string
	GroundTruth bool
	Summary     [][2]string
	Bars        []bar // per-class IoU
	BarsHeight  int
	Shares      []bar // label pixel shares
	SharesHigh  int
	Coverage    []bar // images by foreground share
	CoverHigh   int
	Flags       []string
	Sweep       template.HTML // SVG
	DeadLetters []deadLetterRow
	DeadNote    string
	Legend      []swatch
	Columns     []string
	Samples     []sampleRow
	Missing     string
}

// runInfo is what the report reads from the labels' run record.
type runInfo struct {
	rec   transforms.RunRecord
	label config.Label
	ok    bool
}

func readRunInfo(raw json.RawMessage) runInfo {
	var ri runInfo
	if len(raw) == 0 || json.Unmarshal(raw, &ri.rec) != nil {
		return ri
	}
	ri.ok = true
	if len(ri.rec.Config) > 0 {
		_ = json.Unmarshal(ri.rec.Config, &ri.label)
	}
	return ri
}

// ruleText says how the labels were written: the background rule, and the
// threshold with where it came from, as the run record has them.
func (ri runInfo) ruleText() string {
	th := ri.rec.Threshold
	var src string
	switch th.Source {
	case "model":
		src = fmt.Sprintf("calibrated by the model on %d training images' saliency maps", th.Images)
	case "fixed":
		src = "label.bg_threshold, fixed by the configuration"
	default:
		src = "source not recorded"
	}
	if th.Reason != "" {
		src = th.Reason
	}
	text := fmt.Sprintf("threshold: background score %.2f (%s)", th.Value, src)
	for _, w := range th.Warnings {
		text += "; warning: " + w
	}
	if ri.label.Background == string(transforms.BackgroundSaliency) {
		text = fmt.Sprintf("saliency: background where saliency <= %.2f; salient pixels whose best tagged class scores below %.2f marked 255 (without a usable saliency map: %s, %s)",
			ri.label.SaliencyThreshold, th.CAMThreshold, ri.label.SaliencyFallback, text)
	}
	return text
}

// WriteReport writes REPORT/report.html: one self-contained page (images
// embedded as data URIs, charts as inline SVG, no network). With ground
// truth: per-class IoU bars, the threshold sweep and samples including the
// worst images; always: what the labels are (class shares, per-image
// foreground share, flagged images), how they were written (rule,
// threshold and its source), the run's dead letters, and a legend of the
// label colours.
func WriteReport(ctx context.Context, st *storage.Store, report string, m *Metrics, samples int) error {
	d := reportData{Title: "l2gflow pseudo-label report", GroundTruth: m.GroundTruth}
	ri := readRunInfo(m.Run)
	split := m.Dataset.Split
	if m.Dataset.Manifest != "" {
		split = m.Dataset.Manifest
	}
	d.Summary = [][2]string{
		{"labels", m.Labels},
		{"dataset", fmt.Sprintf("%s (%s)", m.Dataset.Root, split)},
	}
	if m.GroundTruth {
		d.Summary = append(d.Summary,
			[2]string{"mIoU", fmt.Sprintf("%.2f", 100*m.MIoU)},
			[2]string{"images scored", fmt.Sprintf("%d of %d listed", m.Scored, m.Listed)},
			[2]string{"ignored pixels", fmt.Sprintf("%.2f%% (labelled 255; scored as background)", 100*m.IgnoredShare)})
	} else {
		d.Summary = append(d.Summary,
			[2]string{"ground truth", "none found: this report describes the labels, it cannot score them"},
			[2]string{"images described", fmt.Sprintf("%d of %d listed", m.Description.Images, m.Listed)})
	}
	if ri.ok {
		mod := ri.rec.Model
		sha := mod.SHA256
		if len(sha) > 12 {
			sha = sha[:12]
		}
		method := "?"
		if mod.Manifest != nil {
			method = mod.Manifest.Method
		}
		d.Summary = append(d.Summary,
			[2]string{"model", fmt.Sprintf("%s, %s, sha256 %s", mod.URI, method, sha)},
			[2]string{"background rule", ri.ruleText()},
			[2]string{"label run", fmt.Sprintf("%s on %s: %s written, %s", ri.rec.RunID, ri.rec.Runner,
				plural(ri.rec.Counts.LabelsWritten, "label"), plural(ri.rec.Counts.DeadLetters, "dead letter"))})
	} else {
		d.Summary = append(d.Summary, [2]string{"background rule", "unknown: no run record (_run.json) beside the labels"})
	}
	if m.Best != nil {
		d.Summary = append(d.Summary, [2]string{"best sweep", fmt.Sprintf("mIoU %.2f at background threshold %.2f (%d images)", 100*m.Best.MIoU, m.Best.Threshold, m.SweepImages)})
	}

	for i, c := range m.Classes {
		b := bar{Name: c.Name, Label: "-", Y: 22 * i}
		if c.IoU != nil {
			b.Label, b.Width = fmt.Sprintf("%.1f", 100**c.IoU), 400**c.IoU
		}
		d.Bars = append(d.Bars, b)
	}
	d.BarsHeight = 22*len(d.Bars) + 4
	desc := m.Description
	maxShare := 0.0
	for _, c := range desc.Classes {
		maxShare = math.Max(maxShare, c.Share)
	}
	for i, c := range desc.Classes {
		b := bar{Name: c.Name, Y: 22 * i, Colour: paletteCSS(i),
			Label: fmt.Sprintf("%.1f%% of pixels, %d images", 100*c.Share, c.Images)}
		if maxShare > 0 {
			b.Width = 300 * c.Share / maxShare
		}
		d.Shares = append(d.Shares, b)
	}
	d.SharesHigh = 22*len(d.Shares) + 4
	var maxImages int64
	for _, c := range desc.Coverage {
		maxImages = max(maxImages, c.Images)
	}
	for i, c := range desc.Coverage {
		b := bar{Name: fmt.Sprintf("%.0f-%.0f%%", 100*c.From, 100*c.To), Y: 22 * i, Label: fmt.Sprint(c.Images)}
		if maxImages > 0 {
			b.Width = 300 * float64(c.Images) / float64(maxImages)
		}
		d.Coverage = append(d.Coverage, b)
	}
	d.CoverHigh = 22*len(d.Coverage) + 4
	d.Flags = append(d.Flags, fmt.Sprintf("Foreground %.1f%% and ignore (255) %.1f%% of all label pixels.", 100*desc.ForegroundShare, 100*desc.IgnoredShare))
	for _, f := range []struct {
		name string
		fl   FlaggedImages
	}{{"all background", desc.NoForeground}, {"almost all foreground", desc.MostlyForeground}} {
		line := fmt.Sprintf("%s labelled %s (%s)", plural(f.fl.Count, "image"), f.name, f.fl.Rule)
		if f.fl.Count > 0 {
			ids := f.fl.IDs[:min(len(f.fl.IDs), 20)]
			line += ": " + strings.Join(ids, ", ")
			if int64(len(ids)) < f.fl.Count {
				line += ", ..."
			}
		}
		d.Flags = append(d.Flags, line+".")
	}
	if m.GroundTruth {
		d.Sweep = sweepSVG(m.Sweep, m.Best, ri)
	}
	if ri.ok {
		for _, dl := range ri.rec.DeadLetters[:min(len(ri.rec.DeadLetters), 20)] {
			d.DeadLetters = append(d.DeadLetters, deadLetterRow{dl.ID, dl.Stage, storage.Redact(dl.Reason)})
		}
		switch n := ri.rec.Counts.DeadLetters; {
		case n == 0:
			d.DeadNote = "The label run had no dead letters."
		case int64(len(d.DeadLetters)) < n:
			d.DeadNote = fmt.Sprintf("The first %d of %d dead letters; all are in %s.", len(d.DeadLetters), n, ri.rec.ErrorsFile)
		default:
			d.DeadNote = fmt.Sprintf("%s (also in %s).", plural(n, "dead letter"), ri.rec.ErrorsFile)
		}
	}
	switch {
	case m.GroundTruth && m.MissingLabelCount+m.MissingGTCount+int64(len(m.Errors)) > 0:
		d.Missing = fmt.Sprintf("Not scored: %d without a label, %d without ground truth, %d unreadable (see metrics.json).",
			m.MissingLabelCount, m.MissingGTCount, len(m.Errors))
	case !m.GroundTruth && m.MissingLabelCount+int64(len(m.Errors)) > 0:
		d.Missing = fmt.Sprintf("Not described: %d without a label, %d unreadable (see metrics.json).", m.MissingLabelCount, len(m.Errors))
	}
	for i, c := range m.Classes {
		d.Legend = append(d.Legend, swatch{Name: c.Name, Colour: paletteCSS(i)})
	}
	d.Legend = append(d.Legend, swatch{Name: "ignore (255)", Colour: paletteCSS(imagefile.Ignore)})

	// Samples: the first ones by id, then the worst and the flagged.
	byID := map[string]Item{}
	for _, it := range m.Samples {
		byID[it.ID] = it
	}
	var classes []string
	for _, c := range m.Classes[1:] {
		classes = append(classes, c.Name)
	}
	marks := map[string]string{}
	var marked []string
	for _, w := range m.Worst {
		marks[w.ID] = fmt.Sprintf("worst: mIoU %.1f", 100*w.MIoU)
		marked = append(marked, w.ID)
	}
	for _, f := range []struct {
		mark string
		ids  []string
	}{{"all background", desc.NoForeground.IDs}, {"almost all foreground", desc.MostlyForeground.IDs}} {
		for _, id := range f.ids[:min(len(f.ids), FlaggedSamples)] {
			if _, ok := marks[id]; !ok {
				marks[id] = f.mark
				marked = append(marked, id)
			}
		}
	}
	failed := map[string]bool{}
	for _, e := range m.Errors {
		failed[e.ID] = true
	}
	var ids []string
	for _, it := range m.Samples {
		if len(ids) >= samples {
			break
		}
		if _, bad := marks[it.ID]; !bad && !failed[it.ID] {
			ids = append(ids, it.ID)
		}
	}
	for _, id := range marked {
		if _, ok := byID[id]; ok {
			ids = append(ids, id)
		}
	}
	d.Columns = []string{"image", "ground truth", "CAM", "pseudo label", "saliency"}
	if !m.GroundTruth {
		d.Columns = []string{"image", "CAM", "pseudo label", "saliency"}
	}
	for _, id := range ids {
		row, err := sample(ctx, st, m.Labels, byID[id], classes, m.GroundTruth)
		if err != nil {
			return fmt.Errorf("report sample %s: %w", id, err)
		}
		row.Mark = marks[id]
		d.Samples = append(d.Samples, row)
	}
	var buf bytes.Buffer
	if err := reportTemplate.Execute(&buf, d); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return st.WriteFile(ctx, storage.Join(report, ReportFile), buf.Bytes())
}

// plural writes a count with its noun, "1 image" or "2 images".
func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// paletteCSS is the CSS colour of a label value in the VOC palette the
// labels are written with.
func paletteCSS(i int) string {
	r, g, b, _ := imagefile.VOCPalette[i].RGBA()
	return fmt.Sprintf("#%02x%02x%02x", r>>8, g>>8, b>>8)
}

func dataURI(mime string, data []byte) template.URL {
	return template.URL("data:" + mime + ";base64," + base64.StdEncoding.EncodeToString(data))
}

func sample(ctx context.Context, st *storage.Store, labels string, r Item, classes []string, withGT bool) (sampleRow, error) {
	var names []string
	for _, t := range r.Tags {
		if t >= 0 && t < len(classes) {
			names = append(names, classes[t])
		}
	}
	row := sampleRow{ID: r.ID, Tags: strings.Join(names, ", ")}
	read := func(uri string) []byte {
		if uri == "" {
			return nil
		}
		b, err := st.ReadFile(ctx, uri, 64<<20)
		if err != nil {
			return nil
		}
		return b
	}
	imgData := read(r.Image)
	if imgData == nil && r.Probe {
		base := strings.TrimSuffix(r.Image, dataset.ImageExtensions[0])
		for _, ext := range dataset.ImageExtensions[1:] {
			if imgData = read(base + ext); imgData != nil {
				break
			}
		}
	}
	mime := "image/jpeg"
	if bytes.HasPrefix(imgData, []byte("\x89PNG")) {
		mime = "image/png"
	}
	add := func(title string, data []byte, mime, note string) {
		if data != nil {
			if _, _, err := image.DecodeConfig(bytes.NewReader(data)); err != nil {
				data, note = nil, title+" unreadable"
			}
		}
		if data == nil {
			row.Cells = append(row.Cells, cell{Title: title, Note: note})
			return
		}
		row.Cells = append(row.Cells, cell{Title: title, Src: dataURI(mime, data)})
	}
	add("image", imgData, mime, "image unreadable")
	if withGT {
		add("ground truth", read(r.GT), "image/png", "no ground truth")
	}
	var heat []byte
	if camData := read(transforms.CAMURI(labels, r.ID)); camData != nil {
		if cam, err := transforms.DecodeFused(camData, r.Tags); err == nil {
			top := cam.Top()
			heat = heatmapPNG(cam.Map.H, cam.Map.W, func(p int) float32 { return top[p] })
		}
	}
	add("CAM", heat, "image/png", "CAM not stored (label with --keep-cams)")
	add("pseudo label", read(transforms.LabelURI(labels, r.ID)), "image/png", "no label")
	add("saliency", read(r.Saliency), "image/png", "no saliency map")
	return row, nil
}

// heatmapPNG renders values in [0,1] with a blue-to-red ramp.
func heatmapPNG(h, w int, at func(p int) float32) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for p := 0; p < h*w; p++ {
		v := float64(min(1, max(0, at(p))))
		r := math.Min(1, math.Max(0, 1.5-math.Abs(4*v-3)))
		g := math.Min(1, math.Max(0, 1.5-math.Abs(4*v-2)))
		b := math.Min(1, math.Max(0, 1.5-math.Abs(4*v-1)))
		img.Set(p%w, p/w, color.RGBA{uint8(255 * r), uint8(255 * g), uint8(255 * b), 255})
	}
	var buf bytes.Buffer
	_ = png.Encode(&buf, img)
	return buf.Bytes()
}

// tickStep is the spacing of the sweep's axis labels: the smallest of
// 0.01, 0.02, 0.05, 0.1, 0.2, 0.5 that puts at most maxTicks labels on
// [lo, hi].
func tickStep(lo, hi float64, maxTicks int) float64 {
	for _, s := range []float64{0.01, 0.02, 0.05, 0.1, 0.2, 0.5} {
		if (hi-lo)/s <= float64(maxTicks) {
			return s
		}
	}
	return 1
}

// sweepSVG draws mIoU against the background threshold, with the
// threshold the labels were written with.
func sweepSVG(points []SweepPoint, best *SweepPoint, ri runInfo) template.HTML {
	if len(points) == 0 {
		return template.HTML(`<p class="note">No threshold sweep: the labels were written without fused CAMs (label with --keep-cams).</p>`)
	}
	const w, h, pad = 560.0, 240.0, 40.0
	lo, hi := points[0].Threshold, points[len(points)-1].Threshold
	if hi == lo {
		hi = lo + 1
	}
	x := func(t float64) float64 { return pad + (t-lo)/(hi-lo)*(w-2*pad) }
	y := func(v float64) float64 { return h - pad - v*(h-2*pad) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%g" height="%g" viewBox="0 0 %g %g" role="img" aria-label="mIoU against background threshold">`, w, h, w, h)
	fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" class="axis"/><line x1="%g" y1="%g" x2="%g" y2="%g" class="axis"/>`,
		pad, h-pad, w-pad, h-pad, pad, pad, pad, h-pad)
	for _, v := range []float64{0, 0.25, 0.5, 0.75, 1} {
		fmt.Fprintf(&b, `<text x="%g" y="%g" class="tick" text-anchor="end">%g</text>`, pad-4, y(v)+4, 100*v)
	}
	step := tickStep(lo, hi, 10)
	for t := math.Ceil(lo/step-1e-9) * step; t <= hi+1e-9; t += step {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" class="axis"/><text x="%.1f" y="%g" class="tick" text-anchor="middle">%.2f</text>`,
			x(t), h-pad, x(t), h-pad+4, x(t), h-pad+16, t)
	}
	var path []string
	for _, p := range points {
		path = append(path, fmt.Sprintf("%.1f,%.1f", x(p.Threshold), y(nan0(float64(p.MIoU)))))
	}
	fmt.Fprintf(&b, `<polyline points="%s" class="curve"/>`, strings.Join(path, " "))
	for _, p := range points {
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2.5" class="pt"><title>%.2f: mIoU %.2f</title></circle>`, x(p.Threshold), y(nan0(float64(p.MIoU))), p.Threshold, 100*p.MIoU)
	}
	if best != nil {
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="6" class="best"/><text x="%.1f" y="%.1f" class="tick">best %.2f at %.2f</text>`,
			x(best.Threshold), y(float64(best.MIoU)), x(best.Threshold)+8, y(float64(best.MIoU))-8, 100*best.MIoU, best.Threshold)
	}
	if used := ri.rec.Threshold.Value; ri.ok && ri.label.Background != string(transforms.BackgroundSaliency) && used >= lo && used <= hi {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" class="used"/><text x="%.1f" y="%g" class="tick">labels written at %.2f</text>`,
			x(used), pad, x(used), h-pad, x(used)+3, pad+10, used)
	}
	fmt.Fprintf(&b, `<text x="%g" y="%g" class="axislabel" text-anchor="middle">background threshold</text></svg>`, w/2, h-4)
	return template.HTML(b.String())
}

func nan0(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}

var reportTemplate = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<script>
// Self-check, read by the browser test: records script errors and images
// that fail to load in data attributes of <body>.
window.l2gErrors = [];
window.addEventListener('error', function (e) { window.l2gErrors.push(String(e.message || e)); });
window.addEventListener('load', function () {
  var broken = 0;
  document.querySelectorAll('img').forEach(function (im) { if (!im.complete || im.naturalWidth === 0) broken++; });
  document.body.dataset.images = broken === 0 ? 'ok' : 'broken:' + broken;
  document.body.dataset.errors = String(window.l2gErrors.length);
});
</script>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table.summary td:first-child { color: #666; padding-right: 16px; vertical-align: top; }
.note { color: #666; }
.axis { stroke: #888; } .tick { font-size: 10px; fill: #555; } .axislabel { font-size: 11px; fill: #333; }
.curve { fill: none; stroke: #1565c0; stroke-width: 2; } .pt { fill: #1565c0; }
.best { fill: none; stroke: #c62828; stroke-width: 2; } .used { stroke: #999; stroke-dasharray: 4 3; }
.bar { fill: #1565c0; } .barname { font-size: 12px; fill: #333; } .barval { font-size: 11px; fill: #333; }
.legend span { display: inline-block; margin-right: 14px; font-size: 12px; }
.legend i { display: inline-block; width: 14px; height: 14px; vertical-align: -2px; margin-right: 4px; border: 1px solid #999; }
table.dead td { font-size: 12px; padding: 2px 8px; vertical-align: top; }
table.samples { border-collapse: collapse; }
table.samples td, table.samples th { padding: 4px; text-align: center; vertical-align: top; font-size: 12px; }
table.samples img { width: 160px; image-rendering: pixelated; border: 1px solid #ddd; }
tr.marked th { color: #c62828; }
.missing { width: 160px; height: 60px; display: flex; align-items: center; justify-content: center; color: #999; border: 1px dashed #ccc; }
</style></head>
<body>
<h1>{{.Title}}</h1>
<table class="summary">{{range .Summary}}<tr><td>{{index . 0}}</td><td>{{index . 1}}</td></tr>{{end}}</table>
{{if .Missing}}<p class="note">{{.Missing}}</p>{{end}}
{{if .GroundTruth}}<h2>Per-class IoU</h2>
<svg width="600" height="{{.BarsHeight}}" role="img" aria-label="per-class IoU">
{{range .Bars}}<text x="110" y="{{.Y}}" dy="15" text-anchor="end" class="barname">{{.Name}}</text>
<rect x="116" y="{{.Y}}" height="18" width="{{.Width}}" class="bar"/>
<text x="{{.Width}}" y="{{.Y}}" dx="122" dy="14" class="barval">{{.Label}}</text>
{{end}}</svg>{{end}}
<h2>What the labels hold</h2>
<svg width="640" height="{{.SharesHigh}}" role="img" aria-label="label pixel share by class">
{{range .Shares}}<text x="110" y="{{.Y}}" dy="15" text-anchor="end" class="barname">{{.Name}}</text>
<rect x="116" y="{{.Y}}" height="18" width="{{.Width}}" fill="{{.Colour}}" stroke="#999"/>
<text x="{{.Width}}" y="{{.Y}}" dx="122" dy="14" class="barval">{{.Label}}</text>
{{end}}</svg>
{{range .Flags}}<p class="note">{{.}}</p>{{end}}
<h2>Images by foreground share</h2>
<svg width="640" height="{{.CoverHigh}}" role="img" aria-label="images by foreground share">
{{range .Coverage}}<text x="110" y="{{.Y}}" dy="15" text-anchor="end" class="barname">{{.Name}}</text>
<rect x="116" y="{{.Y}}" height="18" width="{{.Width}}" class="bar"/>
<text x="{{.Width}}" y="{{.Y}}" dx="122" dy="14" class="barval">{{.Label}}</text>
{{end}}</svg>
{{if .GroundTruth}}<h2>Background threshold sweep</h2>
{{.Sweep}}{{end}}
<h2>Dead letters of the label run</h2>
{{if .DeadNote}}<p class="note">{{.DeadNote}}</p>{{else}}<p class="note">No run record beside the labels.</p>{{end}}
{{if .DeadLetters}}<table class="dead"><tr><th>image</th><th>stage</th><th>reason</th></tr>
{{range .DeadLetters}}<tr><td>{{.ID}}</td><td>{{.Stage}}</td><td>{{.Reason}}</td></tr>{{end}}</table>{{end}}
<h2>Samples</h2>
<p class="note">The first images{{if .GroundTruth}}, then the worst by image mIoU{{end}} and the flagged ones (marked in red). Label colours:</p>
<p class="legend">{{range .Legend}}<span><i style="background:{{.Colour}}"></i>{{.Name}}</span>{{end}}</p>
<table class="samples"><tr><th>image id</th>{{range .Columns}}<th>{{.}}</th>{{end}}</tr>
{{range .Samples}}<tr{{if .Mark}} class="marked"{{end}}><th>{{.ID}}<br><span class="note">{{.Tags}}</span>{{if .Mark}}<br>{{.Mark}}{{end}}</th>
{{range .Cells}}<td>{{if .Src}}<img src="{{.Src}}" alt="{{.Title}}">{{else}}<div class="missing">{{.Note}}</div>{{end}}</td>{{end}}</tr>
{{end}}</table>
</body></html>
`))
