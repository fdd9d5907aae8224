package study

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Stat is a mean and sample standard deviation over seeds.
type Stat struct {
	Mean, SD float64
	N        int
}

// statOf summarises xs, skipping NaNs.
func statOf(xs []float64) Stat {
	var s Stat
	for _, x := range xs {
		if !math.IsNaN(x) {
			s.Mean += x
			s.N++
		}
	}
	if s.N == 0 {
		return Stat{Mean: math.NaN(), SD: math.NaN()}
	}
	s.Mean /= float64(s.N)
	if s.N > 1 {
		for _, x := range xs {
			if !math.IsNaN(x) {
				s.SD += (x - s.Mean) * (x - s.Mean)
			}
		}
		s.SD = math.Sqrt(s.SD / float64(s.N-1))
	} else {
		s.SD = math.NaN()
	}
	return s
}

// pct formats a [0,1] statistic in points: "52.1 ± 1.3".
func (s Stat) pct() string { return s.points("%.1f") }

// points formats a [0,1] statistic in points, its mean with the verb
// meanVerb, and its standard deviation when there is one.
func (s Stat) points(meanVerb string) string {
	switch {
	case math.IsNaN(s.Mean):
		return "-"
	case math.IsNaN(s.SD):
		return fmt.Sprintf(meanVerb, 100*s.Mean)
	}
	return fmt.Sprintf(meanVerb+" ± %.1f", 100*s.Mean, 100*s.SD)
}

// Summary is one arm's results on one generator, over seeds.
type Summary struct {
	Generator, Arm                         string
	Seeds                                  []int64
	Written, Fixed, Best, Saliency         Stat
	Threshold, BestThreshold               Stat
	MAP, MacroF1, TrainSeconds, Epochs     Stat
	Sweep                                  []float64 // mean mIoU at SweepThresholds
	SweepThresholds                        []float64
	ClassIoU                               map[string]Stat
	worstClass                             string
	written, best, saliency, fixed, mapped map[int64]float64
}

// Summarize groups results by generator and arm (in the arms' order).
func Summarize(results []Result) []Summary {
	order := map[string]int{}
	for i, a := range Arms() {
		order[a.Name] = i
	}
	groups := map[[2]string][]Result{}
	var keys [][2]string
	for _, r := range results {
		k := [2]string{r.Generator, r.Arm}
		if groups[k] == nil {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], r)
	}
	slices.SortFunc(keys, func(a, b [2]string) int {
		if a[0] != b[0] {
			return strings.Compare(b[0], a[0]) // v2 before v1
		}
		return order[a[1]] - order[b[1]]
	})
	var out []Summary
	for _, k := range keys {
		rs := groups[k]
		slices.SortFunc(rs, func(a, b Result) int { return int(a.Seed - b.Seed) })
		s := Summary{Generator: k[0], Arm: k[1], ClassIoU: map[string]Stat{},
			written: map[int64]float64{}, best: map[int64]float64{}, saliency: map[int64]float64{}, fixed: map[int64]float64{}, mapped: map[int64]float64{}}
		col := func(f func(r Result) float64) Stat {
			xs := make([]float64, len(rs))
			for i, r := range rs {
				xs[i] = f(r)
			}
			return statOf(xs)
		}
		for _, r := range rs {
			s.Seeds = append(s.Seeds, r.Seed)
			s.written[r.Seed], s.best[r.Seed], s.saliency[r.Seed] = float64(r.Written), float64(r.Best), float64(r.Saliency)
			s.fixed[r.Seed], s.mapped[r.Seed] = float64(r.Fixed), r.Classification.MAP
		}
		s.Written = col(func(r Result) float64 { return float64(r.Written) })
		s.Fixed = col(func(r Result) float64 { return float64(r.Fixed) })
		s.Best = col(func(r Result) float64 { return float64(r.Best) })
		s.Saliency = col(func(r Result) float64 { return float64(r.Saliency) })
		s.Threshold = col(func(r Result) float64 { return float64(r.Threshold) })
		s.BestThreshold = col(func(r Result) float64 { return float64(r.BestThreshold) })
		s.MAP = col(func(r Result) float64 { return r.Classification.MAP })
		s.MacroF1 = col(func(r Result) float64 { return r.Classification.MacroF1 })
		s.TrainSeconds = col(func(r Result) float64 { return r.TrainSeconds })
		s.Epochs = col(func(r Result) float64 { return r.Epochs })
		if len(rs[0].Sweep) > 0 {
			for i, p := range rs[0].Sweep {
				s.SweepThresholds = append(s.SweepThresholds, p.Threshold)
				s.Sweep = append(s.Sweep, col(func(r Result) float64 {
					if i < len(r.Sweep) {
						return float64(r.Sweep[i].MIoU)
					}
					return math.NaN()
				}).Mean)
			}
		}
		var names []string
		for name := range rs[0].ClassIoU {
			names = append(names, name)
		}
		worst := math.Inf(1)
		for _, name := range names {
			st := col(func(r Result) float64 {
				if v, ok := r.ClassIoU[name]; ok {
					return v
				}
				return math.NaN()
			})
			s.ClassIoU[name] = st
			if name != "background" && st.Mean < worst {
				worst, s.worstClass = st.Mean, name
			}
		}
		out = append(out, s)
	}
	return out
}

// paired is the mean and spread over common seeds of a - b.
func paired(a, b map[int64]float64) Stat {
	var xs []float64
	for seed, x := range a {
		if y, ok := b[seed]; ok {
			xs = append(xs, x-y)
		}
	}
	return statOf(xs)
}

// ReportOptions describe the study for the report's protocol section.
type ReportOptions struct {
	Options Options
	Command string // the command that produced it
	// Plot is the file name of the sweep plot (written beside the report)
	// per generator, e.g. "quality-sweeps-%s.svg".
	Plot string
}

// WriteReport writes the Markdown report to path and the sweep plots
// beside it. It refuses results of more than one commit, or of one arm
// with different settings (CheckComparable). The defaults are chosen on
// the results of the selection seeds (ChooseDefault) and every table
// shows the other seeds' results.
func WriteReport(path string, results []Result, ro ReportOptions) error {
	if err := CheckComparable(results); err != nil {
		return err
	}
	o := ro.Options
	selection, reporting := splitSeeds(results, o.SelectSeeds)
	heldOut := len(reporting) > 0
	if !heldOut {
		reporting = results
	}
	sums := Summarize(reporting)
	var b strings.Builder
	fmt.Fprintf(&b, "# Label quality study\n\n")
	var wall float64
	for _, r := range results {
		wall += r.WallSeconds
	}
	fmt.Fprintf(&b, "Written by `%s` on %s from %d runs of commit %s; do not edit by hand (re-run the study). "+
		"The runs took %s of wall time (their sum; synthesising the datasets not included).\n\n",
		ro.Command, time.Now().UTC().Format("2006-01-02"), len(results), commitOf(results), time.Duration(wall*float64(time.Second)).Round(time.Minute))
	writeChoice(&b, selection, reporting, heldOut, o.SelectSeeds)
	b.WriteString("## Protocol\n\n")
	fmt.Fprintf(&b, "- Data: the synthetic benchmark, %d images of long side about %d px (sizes vary), %d classes, %.0f%% val, %.0f%% without saliency; "+
		"each seed is its own dataset *and* its own training seed.\n", o.Synth.Images, o.Synth.Size, o.Synth.Classes, 100*o.Synth.ValFraction, 100*o.Synth.NoSaliencyFraction)
	ran := map[string]bool{} // the arms with results
	for _, r := range results {
		ran[r.Arm] = true
	}
	// The base configuration is the one the runs recorded (the l2g arm's),
	// not today's defaults, which may have changed since.
	base := o.Train
	for _, r := range results {
		if r.Arm == "l2g" {
			base = r.Config
			break
		}
	}
	fmt.Fprintf(&b, "- Training: the base configuration (`train`'s defaults when the runs were made, as the `l2g` arm recorded it) unless the arm says otherwise: %s backbone from scratch, %d epochs, %s lr %g (%s), batch %d, image %d px, %d views of %d px (%s), transfer %s x%g, global classification weight %g, PCM %v. Every arm trains the same epochs%s.\n",
		base.Arch, base.Epochs, base.Optimizer, base.LR, base.Schedule, base.BatchSize, base.ImageSize, base.Views, base.ViewSize,
		base.ViewMode, base.Transfer, base.KDWeight, base.GlobalClsWeight, base.PCM, exceptEqualTime(ran))
	fmt.Fprintf(&b, "- Labeling: the train split, scales %v, flip %v. **written**: the threshold rule at the threshold the model calibrated on its training images' saliency maps "+
		"(what `label` writes by default; no ground truth read); **fixed %.2f**: the threshold rule at the reference's fixed threshold; **best**: the best of the sweep %.2f-%.2f "+
		"(needs ground truth: an upper bound, not a setting a user can pick); **saliency**: the saliency background rule (saliency > %.2f, class scores below %.2f, or the model's calibrated threshold where lower, dropped).\n",
		o.Label.Scales, o.Label.Flip, o.Label.BgThreshold, o.Eval.SweepFrom, o.Eval.SweepTo, o.Label.SaliencyThreshold, o.Label.CAMThreshold)
	b.WriteString("- Classification: the val split's image logits (the mean of each class map, one view at scale 1): mean average precision and macro F1 at logit 0.\n")
	b.WriteString("- Figures are mean ± sample standard deviation over seeds, in mIoU points (background included, as VOC); the tables below are of the reporting seeds.\n\n")
	b.WriteString("Arms:\n\n")
	var notRun []string
	for _, a := range Arms() {
		if ran[a.Name] {
			fmt.Fprintf(&b, "- `%s`: %s\n", a.Name, a.Doc)
		} else {
			notRun = append(notRun, "`"+a.Name+"`")
		}
	}
	if len(notRun) > 0 {
		fmt.Fprintf(&b, "\nThe study's other arms were not run (`--arms`): %s.\n", strings.Join(notRun, ", "))
	}
	for _, gen := range uniqueGenerators(sums) {
		fmt.Fprintf(&b, "\n## Generator %s\n\n", gen)
		b.WriteString("| arm | seeds | mIoU written (threshold) | mIoU fixed | mIoU best (threshold) | mIoU saliency rule | val mAP | val macro F1 | training | weakest class (IoU) |\n")
		b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		var cam *Summary
		for i := range sums {
			s := &sums[i]
			if s.Generator != gen {
				continue
			}
			if s.Arm == "cam" {
				cam = s
			}
			fmt.Fprintf(&b, "| %s | %d | %s (%s) | %s | %s (%s) | %s | %s | %s | %s, %.1f epochs | %s (%s) |\n",
				s.Arm, len(s.Seeds), s.Written.pct(), thr(s.Threshold), s.Fixed.pct(), s.Best.pct(), thr(s.BestThreshold), s.Saliency.pct(),
				s.MAP.pct(), s.MacroF1.pct(), (time.Duration(s.TrainSeconds.Mean * float64(time.Second))).Round(time.Second), s.Epochs.Mean,
				s.worstClass, s.ClassIoU[s.worstClass].pct())
		}
		if cam != nil {
			b.WriteString("\nDifference to `cam`, paired by seed (mIoU points):\n\n")
			b.WriteString("| arm | written | fixed | best | saliency rule | val mAP |\n| --- | --- | --- | --- | --- | --- |\n")
			for i := range sums {
				s := &sums[i]
				if s.Generator != gen || s.Arm == "cam" {
					continue
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", s.Arm, signed(paired(s.written, cam.written)), signed(paired(s.fixed, cam.fixed)),
					signed(paired(s.best, cam.best)), signed(paired(s.saliency, cam.saliency)), signed(paired(s.mapped, cam.mapped)))
			}
		}
		if ro.Plot != "" {
			name := fmt.Sprintf(ro.Plot, gen)
			if err := os.WriteFile(filepath.Join(filepath.Dir(path), name), []byte(sweepSVG(sums, gen)), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(&b, "\nThreshold sweeps (mean over seeds; the dots are the calibrated thresholds the labels were written with):\n\n![sweeps, generator %s](%s)\n", gen, name)
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func uniqueGenerators(sums []Summary) []string {
	var gens []string
	for _, s := range sums {
		if !slices.Contains(gens, s.Generator) {
			gens = append(gens, s.Generator)
		}
	}
	return gens
}

func thr(s Stat) string {
	switch {
	case math.IsNaN(s.Mean):
		return "-"
	case math.IsNaN(s.SD) || s.SD == 0:
		return fmt.Sprintf("%.2f", s.Mean)
	}
	return fmt.Sprintf("%.2f ± %.2f", s.Mean, s.SD)
}

// signed formats a difference in points with its sign: "+10.3 ± 0.3".
func signed(s Stat) string { return s.points("%+.1f") }

// sweepSVG draws each arm's mean sweep (mIoU against threshold) for one
// generator. Written by hand: a few lines of SVG, where a plotting
// library would be a large dependency for one chart.
func sweepSVG(sums []Summary, gen string) string {
	const W, H, L, R, T, B = 640.0, 360.0, 50.0, 150.0, 20.0, 40.0
	colours := []string{"#1f77b4", "#d62728", "#7f7f7f", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"}
	maxT, maxY := 0.0, 0.0
	for _, s := range sums {
		if s.Generator != gen {
			continue
		}
		for i, t := range s.SweepThresholds {
			maxT = max(maxT, t)
			if !math.IsNaN(s.Sweep[i]) {
				maxY = max(maxY, s.Sweep[i])
			}
		}
	}
	if maxT == 0 {
		maxT = 0.5
	}
	maxY = math.Ceil(maxY*10+0.5) / 10
	x := func(t float64) float64 { return L + (W-L-R)*t/maxT }
	y := func(v float64) float64 { return H - B - (H-T-B)*v/maxY }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", W, H)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	for v := 0.0; v <= maxY+1e-9; v += 0.1 {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.1f" y="%.1f" text-anchor="end">%.0f</text>`+"\n", L, y(v), W-R, y(v), L-4, y(v)+4, 100*v)
	}
	for t := 0.0; t <= maxT+1e-9; t += 0.1 {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.1f" y="%.1f" text-anchor="middle">%.1f</text>`+"\n", x(t), T, x(t), H-B, x(t), H-B+14, t)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">background threshold</text>`+"\n", (L+W-R)/2, H-6)
	fmt.Fprintf(&b, `<text x="12" y="%.1f" transform="rotate(-90 12 %.1f)" text-anchor="middle">mIoU</text>`+"\n", (T+H-B)/2, (T+H-B)/2)
	k := 0
	for _, s := range sums {
		if s.Generator != gen || len(s.Sweep) == 0 {
			continue
		}
		c := colours[k%len(colours)]
		var pts []string
		for i, t := range s.SweepThresholds {
			if !math.IsNaN(s.Sweep[i]) {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(t), y(s.Sweep[i])))
			}
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", c, strings.Join(pts, " "))
		if !math.IsNaN(s.Threshold.Mean) && !math.IsNaN(s.Written.Mean) {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>`+"\n", x(s.Threshold.Mean), y(s.Written.Mean), c)
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/><text x="%.1f" y="%.1f">%s</text>`+"\n",
			W-R+10, T+10+16*float64(k), W-R+30, T+10+16*float64(k), c, W-R+34, T+14+16*float64(k), s.Arm)
		k++
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// CheckComparable returns an error when results come from more than one
// commit, or when one arm's results on one variant were made with
// different settings (configuration hashes).
func CheckComparable(results []Result) error {
	commits := map[string]bool{}
	hashes := map[[2]string]string{}
	for _, r := range results {
		commits[r.Commit] = true
		k := [2]string{r.Generator, r.Arm}
		if h, ok := hashes[k]; ok && h != r.ConfigHash {
			return fmt.Errorf("arm %s on %s was run with two configurations (hashes %s and %s): re-run the study from an empty output folder", r.Arm, r.Generator, h, r.ConfigHash)
		}
		hashes[k] = r.ConfigHash
	}
	if len(commits) > 1 {
		var cs []string
		for c := range commits {
			cs = append(cs, fmt.Sprintf("%q", c))
		}
		slices.Sort(cs)
		return fmt.Errorf("results of %d commits (%s): a report takes one commit's results; re-run the study from an empty output folder", len(cs), strings.Join(cs, ", "))
	}
	return nil
}

func commitOf(results []Result) string {
	if len(results) == 0 || results[0].Commit == "" {
		return "unknown"
	}
	return results[0].Commit
}

// splitSeeds splits results into those of the selection seeds and the
// others.
func splitSeeds(results []Result, selectSeeds []int64) (selection, reporting []Result) {
	for _, r := range results {
		if slices.Contains(selectSeeds, r.Seed) {
			selection = append(selection, r)
		} else {
			reporting = append(reporting, r)
		}
	}
	return selection, reporting
}

// Candidate is one arm's standing against the CAM baseline over the
// variants: the seed-mean paired difference (arm - cam) of the mIoU at
// the written threshold on each variant, its minimum and its mean.
type Candidate struct {
	Arm         string
	PerVariant  map[string]Stat
	Worst, Mean float64
	WorstOn     string
}

// candidates are the L2G arms run on every variant cam was run on, with
// their paired differences to cam, unsorted.
func candidates(sums []Summary) []Candidate {
	cams := map[string]*Summary{}
	for i := range sums {
		if sums[i].Arm == "cam" {
			cams[sums[i].Generator] = &sums[i]
		}
	}
	byArm := map[string]*Candidate{}
	var order []string
	for i := range sums {
		s := &sums[i]
		cam := cams[s.Generator]
		if cam == nil || !strings.HasPrefix(s.Arm, "l2g") {
			continue
		}
		c := byArm[s.Arm]
		if c == nil {
			c = &Candidate{Arm: s.Arm, PerVariant: map[string]Stat{}}
			byArm[s.Arm] = c
			order = append(order, s.Arm)
		}
		c.PerVariant[s.Generator] = paired(s.written, cam.written)
	}
	var out []Candidate
	for _, name := range order {
		c := byArm[name]
		if len(c.PerVariant) != len(cams) {
			continue // not run on every variant: not a candidate
		}
		c.Worst = math.Inf(1)
		for gen, st := range c.PerVariant {
			c.Mean += st.Mean / float64(len(c.PerVariant))
			if st.Mean < c.Worst || (st.Mean == c.Worst && gen < c.WorstOn) {
				c.Worst, c.WorstOn = st.Mean, gen
			}
		}
		out = append(out, *c)
	}
	return out
}

// ChooseDefault ranks the candidate arms by the worst case over variants
// of the seed-mean paired difference to cam at the written threshold,
// highest first; arms within half a point of the best worst case are
// ranked among themselves by their mean over variants. The first is the
// choice.
func ChooseDefault(sums []Summary) []Candidate {
	cs := candidates(sums)
	if len(cs) == 0 {
		return nil
	}
	best := math.Inf(-1)
	for _, c := range cs {
		best = max(best, c.Worst)
	}
	const tie = 0.005 // half a point of mIoU
	slices.SortStableFunc(cs, func(a, b Candidate) int {
		at, bt := a.Worst >= best-tie, b.Worst >= best-tie
		switch {
		case at && bt:
			return cmpDesc(a.Mean, b.Mean)
		case at != bt:
			if at {
				return -1
			}
			return 1
		}
		return cmpDesc(a.Worst, b.Worst)
	})
	return cs
}

func cmpDesc(a, b float64) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

// writeChoice writes the report's first section: the arms ranked on the
// selection seeds, and the chosen arm's differences to cam on the
// reporting seeds (at the written and at the best threshold).
func writeChoice(b *strings.Builder, selection, reporting []Result, heldOut bool, selectSeeds []int64) {
	b.WriteString("## Defaults chosen by the worst case\n\n")
	ranked := ChooseDefault(Summarize(selection))
	if len(ranked) == 0 {
		b.WriteString("No choice: the selection seeds have no L2G arm run on every variant with the `cam` baseline.\n\n")
		return
	}
	fmt.Fprintf(b, "On the selection seeds %v: each L2G arm's seed-mean paired difference to `cam` in mIoU at the written threshold, per variant; "+
		"the arms ranked by the worst case over variants (ties within 0.5 points by the mean):\n\n", selectSeeds)
	gens := make([]string, 0, len(ranked[0].PerVariant))
	for g := range ranked[0].PerVariant {
		gens = append(gens, g)
	}
	slices.Sort(gens)
	fmt.Fprintf(b, "| arm | worst (variant) | mean | %s |\n| --- | --- | --- |%s\n", strings.Join(gens, " | "), strings.Repeat(" --- |", len(gens)))
	for _, c := range ranked {
		fmt.Fprintf(b, "| %s | %+.1f (%s) | %+.1f |", c.Arm, 100*c.Worst, c.WorstOn, 100*c.Mean)
		for _, g := range gens {
			fmt.Fprintf(b, " %+.1f |", 100*c.PerVariant[g].Mean)
		}
		b.WriteString("\n")
	}
	chosen := ranked[0].Arm
	fmt.Fprintf(b, "\nChosen: **%s**.\n\n", chosen)
	if !heldOut {
		b.WriteString("No reporting seeds beyond the selection seeds: the figures below are those the choice was made on.\n\n")
	}
	rs := Summarize(reporting)
	cams := map[string]*Summary{}
	for i := range rs {
		if rs[i].Arm == "cam" {
			cams[rs[i].Generator] = &rs[i]
		}
	}
	b.WriteString("The chosen arm against `cam` on the reporting seeds, paired by seed (mIoU points, mean ± sd):\n\n")
	b.WriteString("| variant | seeds | written | best |\n| --- | --- | --- | --- |\n")
	worst, sum, n := math.Inf(1), 0.0, 0
	worstOn := ""
	for i := range rs {
		s := &rs[i]
		cam := cams[s.Generator]
		if s.Arm != chosen || cam == nil {
			continue
		}
		w := paired(s.written, cam.written)
		fmt.Fprintf(b, "| %s | %d | %s | %s |\n", s.Generator, w.N, signed(w), signed(paired(s.best, cam.best)))
		if w.Mean < worst {
			worst, worstOn = w.Mean, s.Generator
		}
		sum += w.Mean
		n++
	}
	if n > 0 {
		fmt.Fprintf(b, "\nWorst case over variants %+.1f (%s), mean %+.1f: the goal is at least 0 on every variant and +5 in the mean.\n\n", 100*worst, worstOn, 100*sum/float64(n))
	}
}

// exceptEqualTime names, for the protocol's sentence on epochs, the arms
// among those run that train for a time budget instead.
func exceptEqualTime(ran map[string]bool) string {
	var names []string
	for _, a := range Arms() {
		if a.EqualTimeTo != "" && ran[a.Name] {
			names = append(names, "`"+a.Name+"`")
		}
	}
	if len(names) == 0 {
		return ""
	}
	return " except " + strings.Join(names, ", ")
}
