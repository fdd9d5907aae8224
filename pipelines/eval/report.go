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

	"github.com/l2gflow/l2gflow/io/dataset"
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
	ID    string
	Tags  string
	MIoU  string
	Worst bool
	Cells []cell
}

type bar struct {
	Name  string
	Label string // the IoU in percent, "-" where undefined
	Width float64
	Y     int
}

type reportData struct {
	Title      string
	Summary    [][2]string
	Bars       []bar
	BarsHeight int
	Sweep      template.HTML // SVG
	Samples    []sampleRow
	Missing    string
}

// WriteReport writes REPORT/report.html: one self-contained page (images
// embedded as data URIs, charts as inline SVG, no network) with per-class
// IoU bars, the threshold sweep, and a grid of samples including the worst
// images by IoU.
func WriteReport(ctx context.Context, st *storage.Store, report string, m *Metrics, samples int) error {
	d := reportData{Title: "l2gflow pseudo-label report"}
	var run struct {
		Runner string `json:"runner"`
		Model  struct {
			URI      string `json:"uri"`
			SHA256   string `json:"sha256"`
			Manifest struct {
				Method string `json:"method"`
			} `json:"manifest"`
		} `json:"model"`
		Config struct {
			Background  string  `json:"Background"`
			BgThreshold float64 `json:"BgThreshold"`
		} `json:"config"`
	}
	if len(m.Run) > 0 {
		_ = json.Unmarshal(m.Run, &run)
	}
	split := m.Dataset.Split
	if m.Dataset.Manifest != "" {
		split = m.Dataset.Manifest
	}
	d.Summary = [][2]string{
		{"labels", m.Labels},
		{"dataset", fmt.Sprintf("%s (%s)", m.Dataset.Root, split)},
		{"mIoU", fmt.Sprintf("%.2f", 100*m.MIoU)},
		{"images scored", fmt.Sprintf("%d of %d listed", m.Scored, m.Listed)},
		{"ignored pixels", fmt.Sprintf("%.2f%% (labelled 255; scored as background)", 100*m.IgnoredShare)},
	}
	if run.Model.SHA256 != "" {
		d.Summary = append(d.Summary, [2]string{"model", fmt.Sprintf("%s, %s, sha256 %s", run.Model.URI, run.Model.Manifest.Method, run.Model.SHA256[:12])},
			[2]string{"background rule", fmt.Sprintf("%s (threshold %.2f)", run.Config.Background, run.Config.BgThreshold)})
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
	d.Sweep = sweepSVG(m.Sweep, m.Best, run.Config.BgThreshold)
	if n := m.MissingLabelCount + m.MissingGTCount + int64(len(m.Errors)); n > 0 {
		d.Missing = fmt.Sprintf("Not scored: %d without a label, %d without ground truth, %d unreadable (see metrics.json).",
			m.MissingLabelCount, m.MissingGTCount, len(m.Errors))
	}

	// Samples: the first ones by id, then the worst.
	byID := map[string]Item{}
	for _, it := range m.Samples {
		byID[it.ID] = it
	}
	var classes []string
	for _, c := range m.Classes[1:] {
		classes = append(classes, c.Name)
	}
	worst := map[string]float64{}
	for _, w := range m.Worst {
		worst[w.ID] = w.MIoU
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
		if _, bad := worst[it.ID]; !bad && !failed[it.ID] {
			ids = append(ids, it.ID)
		}
	}
	for _, w := range m.Worst {
		if _, ok := byID[w.ID]; ok {
			ids = append(ids, w.ID)
		}
	}
	for _, id := range ids {
		row, err := sample(ctx, st, m.Labels, byID[id], classes)
		if err != nil {
			return fmt.Errorf("report sample %s: %w", id, err)
		}
		if v, ok := worst[id]; ok {
			row.Worst, row.MIoU = true, fmt.Sprintf("%.1f", 100*v)
		}
		d.Samples = append(d.Samples, row)
	}
	var buf bytes.Buffer
	if err := reportTemplate.Execute(&buf, d); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return st.WriteFile(ctx, storage.Join(report, ReportFile), buf.Bytes())
}

func dataURI(mime string, data []byte) template.URL {
	return template.URL("data:" + mime + ";base64," + base64.StdEncoding.EncodeToString(data))
}

func sample(ctx context.Context, st *storage.Store, labels string, r Item, classes []string) (sampleRow, error) {
	var names []string
	for _, t := range r.Tags {
		names = append(names, classes[t])
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
	add("ground truth", read(r.GT), "image/png", "no ground truth")
	var heat []byte
	if camData := read(transforms.CAMURI(labels, r.ID)); camData != nil {
		if cam, err := transforms.DecodeMap(camData); err == nil {
			heat = heatmapPNG(cam.H, cam.W, func(p int) float32 {
				var v float32
				for _, t := range r.Tags {
					v = max(v, cam.Pix[p*cam.C+t])
				}
				return v
			})
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

// sweepSVG draws mIoU against the background threshold.
func sweepSVG(points []SweepPoint, best *SweepPoint, used float64) template.HTML {
	if len(points) == 0 {
		return template.HTML(`<p class="note">No threshold sweep: the labels were written without fused CAMs (label with --keep-cams).</p>`)
	}
	const w, h, pad = 520.0, 240.0, 40.0
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
	var path []string
	for _, p := range points {
		path = append(path, fmt.Sprintf("%.1f,%.1f", x(p.Threshold), y(nan0(p.MIoU))))
		fmt.Fprintf(&b, `<text x="%g" y="%g" class="tick" text-anchor="middle">%.2f</text>`, x(p.Threshold), h-pad+14, p.Threshold)
	}
	fmt.Fprintf(&b, `<polyline points="%s" class="curve"/>`, strings.Join(path, " "))
	for _, p := range points {
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" class="pt"><title>%.2f: mIoU %.2f</title></circle>`, x(p.Threshold), y(nan0(p.MIoU)), p.Threshold, 100*p.MIoU)
	}
	if best != nil {
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="6" class="best"/><text x="%.1f" y="%.1f" class="tick">best %.2f</text>`,
			x(best.Threshold), y(best.MIoU), x(best.Threshold)+8, y(best.MIoU)-8, 100*best.MIoU)
	}
	if used >= lo && used <= hi && used > 0 {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" class="used"/><text x="%.1f" y="%g" class="tick">labels</text>`,
			x(used), pad, x(used), h-pad, x(used)+3, pad+10)
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
table.summary td:first-child { color: #666; padding-right: 16px; }
.note { color: #666; }
.axis { stroke: #888; } .tick { font-size: 10px; fill: #555; } .axislabel { font-size: 11px; fill: #333; }
.curve { fill: none; stroke: #1565c0; stroke-width: 2; } .pt { fill: #1565c0; }
.best { fill: none; stroke: #c62828; stroke-width: 2; } .used { stroke: #999; stroke-dasharray: 4 3; }
.bar { fill: #1565c0; } .barname { font-size: 12px; fill: #333; } .barval { font-size: 11px; fill: #333; }
table.samples { border-collapse: collapse; }
table.samples td, table.samples th { padding: 4px; text-align: center; vertical-align: top; font-size: 12px; }
table.samples img { width: 160px; image-rendering: pixelated; border: 1px solid #ddd; }
tr.worst th { color: #c62828; }
.missing { width: 160px; height: 60px; display: flex; align-items: center; justify-content: center; color: #999; border: 1px dashed #ccc; }
</style></head>
<body>
<h1>{{.Title}}</h1>
<table class="summary">{{range .Summary}}<tr><td>{{index . 0}}</td><td>{{index . 1}}</td></tr>{{end}}</table>
{{if .Missing}}<p class="note">{{.Missing}}</p>{{end}}
<h2>Per-class IoU</h2>
<svg width="600" height="{{.BarsHeight}}" role="img" aria-label="per-class IoU">
{{range .Bars}}<text x="110" y="{{.Y}}" dy="15" text-anchor="end" class="barname">{{.Name}}</text>
<rect x="116" y="{{.Y}}" height="18" width="{{.Width}}" class="bar"/>
<text x="{{.Width}}" y="{{.Y}}" dx="122" dy="14" class="barval">{{.Label}}</text>
{{end}}</svg>
<h2>Background threshold sweep</h2>
{{.Sweep}}
<h2>Samples</h2>
<p class="note">The first images, then the worst by image mIoU (red).</p>
<table class="samples"><tr><th>image id</th><th>image</th><th>ground truth</th><th>CAM</th><th>pseudo label</th><th>saliency</th></tr>
{{range .Samples}}<tr{{if .Worst}} class="worst"{{end}}><th>{{.ID}}<br><span class="note">{{.Tags}}</span>{{if .Worst}}<br>mIoU {{.MIoU}}{{end}}</th>
{{range .Cells}}<td>{{if .Src}}<img src="{{.Src}}" alt="{{.Title}}">{{else}}<div class="missing">{{.Note}}</div>{{end}}</td>{{end}}</tr>
{{end}}</table>
</body></html>
`))
