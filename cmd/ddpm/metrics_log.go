package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ddpm-go/ddpm/internal/atomicfile"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// metricsLog appends training metrics (one JSON object per line, each
// with "step" and "loss") to a file and redraws the loss plot from
// everything logged so far. It takes any record type: the U-Net's
// train.Metrics and the autoencoder's records share it.
type metricsLog struct {
	path, plotPath string
	f              *os.File
	steps, losses  []float64
}

// loggedStep is what the log reads of every record.
type loggedStep struct {
	Step *int64  `json:"step"`
	Loss float64 `json:"loss"`
}

// openMetricsLog opens the log (metrics.jsonl, with loss.png) of the run
// in dir, whose training state is at step upTo. A resumed run keeps its records up to that step, byte for byte,
// and drops the rest (steps logged after the checkpoint it resumes from,
// and a line cut short by a crash), rewriting the file atomically, so the
// log reads as one run.
func openMetricsLog(dir string, upTo int64) (*metricsLog, error) {
	path := filepath.Join(dir, metricsFile)
	l := &metricsLog{path: path, plotPath: filepath.Join(dir, lossPlot)}
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("cannot read the metrics log: %w", err)
	}
	var keep []byte
	for _, line := range bytes.Split(old, []byte("\n")) {
		var r loggedStep
		if json.Unmarshal(line, &r) != nil || r.Step == nil || *r.Step > upTo {
			continue
		}
		keep = append(append(keep, line...), '\n')
		l.steps = append(l.steps, float64(*r.Step))
		l.losses = append(l.losses, r.Loss)
	}
	if err == nil {
		if err := atomicfile.Write(path, keep); err != nil {
			return nil, fmt.Errorf("cannot write the metrics log: %w", err)
		}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot write the metrics log: %w", err)
	}
	l.f = f
	return l, nil
}

// removeStaleTemps deletes the temporary files that a run killed while
// writing leaves in its directory: checkpoints (.ckpt-*.safetensors.tmp-*,
// hundreds of megabytes each for large models), the loss plot, the
// configuration, the metrics log and sample grids.
func removeStaleTemps(dir string) error {
	for _, pattern := range []string{".ckpt-*.safetensors.tmp-*", lossPlot + ".tmp.png", configFile + ".tmp",
		metricsFile + ".tmp", filepath.Join(samplesDir, ".tmp-*.png")} {
		matches, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return err
		}
		for _, m := range matches {
			if err := os.Remove(m); err != nil {
				return fmt.Errorf("removing a stale temporary file: %w", err)
			}
		}
	}
	return nil
}

// write appends record, which must marshal to an object holding the step
// and the loss.
func (l *metricsLog) write(record any) error {
	b, err := json.Marshal(record)
	if err != nil {
		return err
	}
	var r loggedStep
	if err := json.Unmarshal(b, &r); err != nil || r.Step == nil {
		return fmt.Errorf("metrics record %s has no step", b)
	}
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("writing %s: %w", l.path, err)
	}
	l.steps = append(l.steps, float64(*r.Step))
	l.losses = append(l.losses, r.Loss)
	return nil
}

// plot draws the loss against the step (log scale) as a PNG.
func (l *metricsLog) plot() error {
	if len(l.steps) < 2 {
		return nil
	}
	p := plot.New()
	p.Title.Text = "training loss"
	p.X.Label.Text = "step"
	p.Y.Label.Text = "loss"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	pts := make(plotter.XYs, 0, len(l.steps))
	for i := range l.steps {
		if l.losses[i] > 0 {
			pts = append(pts, plotter.XY{X: l.steps[i], Y: l.losses[i]})
		}
	}
	line, err := plotter.NewLine(pts)
	if err != nil {
		return err
	}
	p.Add(line)
	tmp := l.plotPath + ".tmp.png"
	if err := p.Save(6*vg.Inch, 4*vg.Inch, tmp); err != nil {
		return fmt.Errorf("drawing the loss plot: %w", err)
	}
	return os.Rename(tmp, l.plotPath)
}

func (l *metricsLog) close() error { return l.f.Close() }
