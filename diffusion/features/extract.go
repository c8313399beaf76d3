package features

import (
	"context"
	"fmt"

	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/torch"
)

// Extractor is a feature network.
type Extractor interface {
	// Features maps a batch of images x (N, C, H, W), float32 in [-1, 1] on
	// any device, to features (N, Dim) and, if the network classifies, class
	// probabilities (N, classes) whose rows sum to 1; probs is nil
	// otherwise. Both belong to s; failures are recorded in s.
	Features(s *torch.Scope, x *torch.Tensor) (feats, probs *torch.Tensor)
	// Dim is the length of the feature vectors.
	Dim() int
}

// FeatureSet holds the features of N images, row-major.
type FeatureSet struct {
	N        int
	Dim      int
	Features []float64 // N×Dim
	Classes  int       // columns of Probs; 0 without probabilities
	Probs    []float64 // N×Classes class probabilities, or nil
}

// ArgMax is the most probable class of every image, or nil without
// probabilities.
func (f *FeatureSet) ArgMax() []int64 {
	if f.Classes == 0 {
		return nil
	}
	out := make([]int64, f.N)
	for i := range out {
		row := f.Probs[i*f.Classes : (i+1)*f.Classes]
		best := 0
		for j, p := range row {
			if p > row[best] {
				best = j
			}
		}
		out[i] = int64(best)
	}
	return out
}

// ExtractOptions configure Extract.
type ExtractOptions struct {
	Batch int // images per forward pass [64]
	// OnBatch, if set, is told after each batch how many images are done.
	OnBatch func(done, total int)
}

// Extract runs ext over the images of ds, in batches, and collects the
// features (and probabilities) as float64. It stops with ctx's error when
// ctx is done.
func Extract(ctx context.Context, ext Extractor, ds *data.Dataset, o ExtractOptions) (*FeatureSet, error) {
	if ds == nil || ds.N == 0 {
		return nil, fmt.Errorf("features: no images to extract features from")
	}
	per := ds.C * ds.H * ds.W
	if len(ds.Images) != ds.N*per {
		return nil, fmt.Errorf("features: %s has %d values, want N*C*H*W = %d", ds.Source, len(ds.Images), ds.N*per)
	}
	if o.Batch <= 0 {
		o.Batch = 64
	}
	fs := &FeatureSet{N: ds.N, Dim: ext.Dim()}
	fs.Features = make([]float64, 0, fs.N*fs.Dim)
	for lo := 0; lo < ds.N; lo += o.Batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hi := min(lo+o.Batch, ds.N)
		if err := extractBatch(ext, fs, ds.Images[lo*per:hi*per], []int64{int64(hi - lo), int64(ds.C), int64(ds.H), int64(ds.W)}); err != nil {
			return nil, err
		}
		if o.OnBatch != nil {
			o.OnBatch(hi, ds.N)
		}
	}
	return fs, nil
}

// extractBatch appends the features of one batch of images to fs.
func extractBatch(ext Extractor, fs *FeatureSet, pix []float32, shape []int64) error {
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	n := int(shape[0])
	feats, probs := ext.Features(s, s.FromFloat32s(pix, shape...))
	if err := s.Err(); err != nil {
		return fmt.Errorf("features: %w", err)
	}
	f, err := hostFloat64s(s, feats, n, fs.Dim, "features")
	if err != nil {
		return err
	}
	fs.Features = append(fs.Features, f...)
	if probs == nil {
		if fs.Probs != nil {
			return fmt.Errorf("features: the extractor gave class probabilities for some batches only")
		}
		return nil
	}
	classes := 0
	if sh := probs.Shape(); len(sh) == 2 {
		classes = int(sh[1])
	}
	if fs.Probs == nil {
		if len(fs.Features) != len(f) {
			return fmt.Errorf("features: the extractor gave class probabilities for some batches only")
		}
		fs.Classes = classes
		fs.Probs = make([]float64, 0, fs.N*classes)
	}
	p, err := hostFloat64s(s, probs, n, fs.Classes, "class probabilities")
	if err != nil {
		return err
	}
	fs.Probs = append(fs.Probs, p...)
	return nil
}

// hostFloat64s copies t, which must be (n, cols), to the host as float64.
func hostFloat64s(s *torch.Scope, t *torch.Tensor, n, cols int, what string) ([]float64, error) {
	if sh := t.Shape(); len(sh) != 2 || sh[0] != int64(n) || sh[1] != int64(cols) || cols == 0 {
		return nil, fmt.Errorf("features: the extractor returned %s shaped %v, want (%d, %d)", what, sh, n, cols)
	}
	t = s.ToDType(s.To(t, torch.CPU), torch.Float64)
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("features: %w", err)
	}
	return t.Float64s()
}
