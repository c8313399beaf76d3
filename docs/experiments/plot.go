// Command experiments draws fid-vs-time.png, offline FID (fid-classifier)
// against training time, from experiments.tsv, the figures of the training
// experiments docs/experiments.md describes. Run it from the repository
// root after adding a row:
//
//	go run ./docs/experiments
package main

import (
	"bufio"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// point is one evaluation of one experiment.
type point struct {
	run     string
	steps   int64
	minutes float64 // training time to that step, evaluations included
	fid     float64
	samples int // samples the FID was computed from
}

// readPoints reads the tab-separated table: a header line, then run,
// steps, minutes, fid_classifier, samples and further columns it ignores.
func readPoints(path string) ([]point, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var pts []point
	sc := bufio.NewScanner(f)
	for line := 0; sc.Scan(); line++ {
		if line == 0 || strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) < 5 {
			return nil, fmt.Errorf("%s:%d: %d columns, want at least 5", path, line+1, len(cols))
		}
		var p point
		var errs [4]error
		p.run = cols[0]
		p.steps, errs[0] = strconv.ParseInt(cols[1], 10, 64)
		p.minutes, errs[1] = strconv.ParseFloat(cols[2], 64)
		p.fid, errs[2] = strconv.ParseFloat(cols[3], 64)
		p.samples, errs[3] = strconv.Atoi(cols[4])
		for _, err := range errs {
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", path, line+1, err)
			}
		}
		pts = append(pts, p)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pts, nil
}

// draw plots one line per run (points in the table's order of time),
// FID on a log scale, with the data's floor and twice it as references,
// over the goal's CPU budget of 2.5 hours.
func draw(pts []point, floor float64, out string) error {
	p := plot.New()
	p.Title.Text = "Fashion-MNIST, 2 CPU cores: offline FID against training time"
	p.X.Label.Text = "training time (minutes, evaluations included)"
	p.Y.Label.Text = "fid-classifier"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	var runs []string
	byRun := map[string]plotter.XYs{}
	for _, q := range pts {
		if _, ok := byRun[q.run]; !ok {
			runs = append(runs, q.run)
		}
		byRun[q.run] = append(byRun[q.run], plotter.XY{X: q.minutes, Y: q.fid})
	}
	const budget = 150.0 // minutes
	p.X.Min, p.X.Max = 0, budget
	for i, r := range runs {
		xy := byRun[r]
		sort.Slice(xy, func(a, b int) bool { return xy[a].X < xy[b].X })
		line, scatter, err := plotter.NewLinePoints(xy)
		if err != nil {
			return err
		}
		line.Color, scatter.Color = plotutil.Color(i), plotutil.Color(i)
		scatter.Shape = plotutil.Shape(i)
		p.Add(line, scatter)
		p.Legend.Add(r, line, scatter)
	}
	for _, ref := range []struct {
		y    float64
		name string
	}{{floor, "floor (test split)"}, {2 * floor, "2x floor"}} {
		l, err := plotter.NewLine(plotter.XYs{{X: 0, Y: ref.y}, {X: budget, Y: ref.y}})
		if err != nil {
			return err
		}
		l.Color = color.Gray{Y: 128}
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(l)
		p.Legend.Add(ref.name, l)
	}
	p.Legend.Top = true
	return p.Save(8*vg.Inch, 5*vg.Inch, out)
}

func main() {
	dir := filepath.Join("docs", "experiments")
	pts, err := readPoints(filepath.Join(dir, "experiments.tsv"))
	if err == nil {
		err = draw(pts, floor, filepath.Join(dir, "fid-vs-time.png"))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "experiments:", err)
		os.Exit(1)
	}
}

// floor is bin/ddpm eval --floor: the test split scored against the
// training split, what a perfect model would get.
const floor = 0.4677
