package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/optim"
	"github.com/ddpm-go/ddpm/diffusion/train"
	"github.com/ddpm-go/ddpm/torch"
	"github.com/urfave/cli/v2"
)

// recipe is what the train flags left unset mean on a device. A CPU gets a
// run sized to end within about 40 minutes on 2 cores with recognisable
// images and a score: 4000 steps of 64 in bf16 where the CPU has bfloat16
// instructions (about 130 images/s for the small preset on an AVX512-BF16
// EPYC, against 80 in float32), a peak learning rate of 4e-4 decayed along a
// cosine to 0 (a short run gains most from the decay). CUDA keeps the
// paper-scale recipe of Ho et al. 2020: 2e-4 held flat, float32, and as many
// steps as the default's 20000 allow. The figures behind these choices are in
// docs/experiments.md.
type recipe struct {
	device    string // "a CPU", "CUDA"
	steps     int64
	lr        float64
	decay     optim.LRDecay
	precision diffusion.Precision
}

// recipeFor is the recipe of dev.
func recipeFor(dev torch.Device) recipe {
	if dev.Type == torch.DeviceCUDA { // the library's defaults
		return recipe{device: "CUDA", steps: train.DefaultSteps, lr: optim.DefaultLR, decay: optim.ConstantLR, precision: diffusion.Float32}
	}
	r := recipe{device: "a CPU", steps: 4000, lr: 4e-4, decay: optim.CosineLR, precision: diffusion.BF16}
	if diffusion.BF16.Check(dev) != nil {
		r.precision = diffusion.Float32
	}
	return r
}

// apply sets the flags the user left unset (on the command line, in the
// environment or in --config) to the recipe's values, and returns their
// names.
func (r recipe) apply(c *cli.Context) ([]string, error) {
	var set []string
	for _, f := range []struct{ name, value string }{
		{"steps", strconv.FormatInt(r.steps, 10)},
		{"lr", strconv.FormatFloat(r.lr, 'g', -1, 64)},
		{"lr-decay", string(r.decay)},
		{"precision", string(r.precision)},
	} {
		if c.IsSet(f.name) {
			continue
		}
		if err := c.Set(f.name, f.value); err != nil {
			return nil, err
		}
		set = append(set, f.name)
	}
	return set, nil
}

// planLine says what a new run will do, before it starts.
func planLine(cfg runConfig, r recipe, fromRecipe []string, finalEval int) string {
	t := cfg.Train
	s := fmt.Sprintf("ddpm: plan: %d steps of %d images, %s, learning rate %g (%s", t.Steps, t.BatchSize, t.Precision, t.Optimizer.LR, t.Optimizer.Decay)
	if t.Optimizer.Decay != optim.ConstantLR {
		s += " decay to 0"
	}
	s += ")"
	if finalEval > 0 {
		s += fmt.Sprintf(", then fid-classifier on %d samples", finalEval)
	}
	if len(fromRecipe) > 0 {
		s += fmt.Sprintf("; %s's defaults for --%s", r.device, fromRecipe[0])
		for _, n := range fromRecipe[1:] {
			s += ", --" + n
		}
	}
	return s
}

// endNote foretells, once, when the training ends, from the bar's pace
// over the 20 steps after the first (which pays for warm-up): the line to
// print after step, "" until then, after it was said, and when nothing is
// left to foretell.
type endNote struct{ said bool }

func (e *endNote) line(bar *progress, step int64) string {
	const after = 20
	now := time.Now()
	per, n := bar.pace(step, now)
	if e.said || n < after || step >= bar.total {
		return ""
	}
	e.said = true
	left := per * time.Duration(bar.total-step)
	return fmt.Sprintf("ddpm: %.2f s a step over steps %d-%d: the training ends in about %s (at %s), evaluations aside",
		per.Seconds(), bar.firstDone+1, step, roughDuration(left), now.Add(left).Format("15:04"))
}

// roughDuration writes d to the minute ("1h5m"), or to the second under a
// minute.
func roughDuration(d time.Duration) string {
	if d < time.Minute {
		return d.Round(time.Second).String()
	}
	return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
}
