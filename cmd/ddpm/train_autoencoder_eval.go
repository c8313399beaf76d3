package main

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/ddpm-go/ddpm/diffusion/autoencoder"
	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/images"
	"github.com/ddpm-go/ddpm/diffusion/nn"
)

// autoencoderMetrics is one record of an autoencoder run's metrics.jsonl:
// the means over the steps since the last record, and at evaluation steps
// the held-out reconstruction PSNR.
type autoencoderMetrics struct {
	Step           int64    `json:"step"`
	Loss           float64  `json:"loss"`
	Reconstruction float64  `json:"reconstruction"`
	KL             float64  `json:"kl"`
	LR             float64  `json:"lr"`
	ImagesPerSec   float64  `json:"images_per_s"`
	EvalPSNR       *float64 `json:"eval_psnr,omitempty"` // dB, of the weights the run's checkpoints serve (EMA when kept)
}

// gridImages is how many held-out images a reconstruction grid shows,
// over their reconstructions.
const gridImages = 8

// autoencoderEval measures an autoencoder on held-out images: the test
// split beside the training data when there is one, else images held out
// of the training data.
type autoencoderEval struct {
	held *data.Dataset
	what string             // where the held-out images come from, for messages
	ema  *autoencoder.Model // holds the EMA weights for evaluation; nil without EMA
}

// newAutoencoderEval splits off at most n held-out images (none when n is
// 0) and returns the training set and the evaluation; ema says whether the
// run keeps EMA weights.
func newAutoencoderEval(ds *data.Dataset, n int, seed uint64, m *autoencoder.Model, ema bool) (*data.Dataset, *autoencoderEval, error) {
	e := &autoencoderEval{}
	if n <= 0 {
		return ds, e, nil
	}
	test, err := testSplit(ds.Path, ds.H, ds.C)
	if err != nil {
		return nil, nil, err
	}
	trainSet := ds
	if test != nil {
		_, e.held = test.Split(min(n, test.N), seed)
		e.what = "test split"
	} else {
		trainSet, e.held = ds.Split(min(n, ds.N/10), seed)
		e.what = "held out of the training data"
	}
	if ema {
		if e.ema, err = autoencoder.New(m.Config(), m.Device(), m.DType(), nil); err != nil {
			return nil, nil, err
		}
	}
	return trainSet, e, nil
}

func (e *autoencoderEval) close() {
	if e.ema != nil {
		e.ema.Close()
	}
}

// served returns the model holding the weights the run's checkpoints
// serve: a copy of the EMA weights when the run keeps them, else m.
func (e *autoencoderEval) served(m *autoencoder.Model, emaWeights []nn.Param) (*autoencoder.Model, error) {
	if e.ema == nil || emaWeights == nil {
		return m, nil
	}
	if err := nn.LoadStateDict(e.ema.Params(), nn.StateDict(emaWeights)); err != nil {
		return nil, err
	}
	return e.ema, nil
}

// measure returns the held-out PSNR of the served weights and writes the
// grid of the first held-out images (top row) over their reconstructions
// to samples/step-NNNNNNNN.png in dir.
func (e *autoencoderEval) measure(m *autoencoder.Model, emaWeights []nn.Param, dir string, step int64) (float64, error) {
	w, err := e.served(m, emaWeights)
	if err != nil {
		return 0, err
	}
	p, err := autoencoder.ReconstructionPSNR(w, e.held, 64)
	if err != nil {
		return 0, err
	}
	h := e.held
	n := min(gridImages, h.N)
	orig := h.Images[:n*h.C*h.H*h.W]
	rec, err := autoencoder.Reconstruct(w, orig, n, h.C, h.H, h.W)
	if err != nil {
		return 0, err
	}
	img, err := images.Grid(append(append([]float32(nil), orig...), rec...), 2*n, h.C, h.H, h.W, n, 2)
	if err != nil {
		return 0, err
	}
	if err := images.SavePNG(gridPath(filepath.Join(dir, samplesDir), step), img); err != nil {
		return 0, fmt.Errorf("writing the reconstruction grid: %w", err)
	}
	return p, nil
}

// report prints the held-out PSNR of the weights the checkpoints serve,
// served (measured at the last step), and, when those are the EMA
// weights, the PSNR of the training weights beside it.
func (e *autoencoderEval) report(w io.Writer, m *autoencoder.Model, served float64) error {
	if e.ema == nil {
		fmt.Fprintf(w, "ddpm: reconstruction PSNR %.2f dB on %d images (%s), training weights\n", served, e.held.N, e.what)
		return nil
	}
	p, err := autoencoder.ReconstructionPSNR(m, e.held, 64)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "ddpm: reconstruction PSNR %.2f dB on %d images (%s), training weights\n", p, e.held.N, e.what)
	fmt.Fprintf(w, "ddpm: reconstruction PSNR %.2f dB on %d images (%s), EMA weights\n", served, e.held.N, e.what)
	return nil
}
