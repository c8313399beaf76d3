package features

import (
	"context"
	"fmt"

	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/metrics"
)

// Reference is what generated images are compared with: the Gaussian fit
// of a reference set's features and, when known, the features themselves
// (which KID needs).
type Reference struct {
	Stats    *metrics.Stats
	Features *FeatureSet // nil when only the statistics are known
}

// NewReference fits the statistics of a reference set's features.
func NewReference(fs *FeatureSet) (*Reference, error) {
	st, err := metrics.FitStats(fs.Features, fs.N, fs.Dim)
	if err != nil {
		return nil, fmt.Errorf("features: reference statistics: %w", err)
	}
	return &Reference{Stats: st, Features: fs}, nil
}

// ReferenceFromFile reads reference statistics in the pytorch-fid .npz
// layout (mu and sigma, float64), as metrics.ReadNPZ does. Such a reference
// gives FID but not KID.
func ReferenceFromFile(path string) (*Reference, error) {
	st, err := metrics.ReadNPZ(path)
	if err != nil {
		return nil, err
	}
	return &Reference{Stats: st}, nil
}

// Options configure Compare and Evaluate. Zero values take the defaults in
// brackets.
type Options struct {
	KIDSubsets    int    // [metrics.DefaultKIDSubsets]
	KIDSubsetSize int    // [metrics.DefaultKIDSubsetSize]
	Seed          uint64 // draws KID's subsets
	ISSplits      int    // [metrics.DefaultISSplits]
	// Batch and OnBatch are passed to Extract by Evaluate.
	Batch   int
	OnBatch func(done, total int)
}

// Report holds the scores of a set of generated images.
type Report struct {
	N   int     // images scored
	FID float64 // Fréchet distance to the reference
	// KID and KIDStd are the mean and standard deviation of the kernel
	// distance over subsets; HasKID is false when the reference has no
	// features or a set has fewer than 2 images.
	KID, KIDStd float64
	HasKID      bool
	// IS and ISStd are the Inception Score (exp of the mean KL divergence
	// between p(y|x) and p(y)) over ISSplits splits; HasIS is false without
	// class probabilities or with fewer images than splits.
	IS, ISStd float64
	HasIS     bool
	// Histogram counts the images per most probable class; nil without
	// class probabilities.
	Histogram []int
}

func (o Options) withDefaults() Options {
	if o.KIDSubsets == 0 {
		o.KIDSubsets = metrics.DefaultKIDSubsets
	}
	if o.KIDSubsetSize == 0 {
		o.KIDSubsetSize = metrics.DefaultKIDSubsetSize
	}
	if o.ISSplits == 0 {
		o.ISSplits = metrics.DefaultISSplits
	}
	return o
}

// Compare scores the features of generated images against ref.
func Compare(gen *FeatureSet, ref *Reference, o Options) (*Report, error) {
	o = o.withDefaults()
	if ref == nil || ref.Stats == nil {
		return nil, fmt.Errorf("features: no reference statistics")
	}
	if gen.Dim != ref.Stats.Dim() {
		return nil, fmt.Errorf("features: the generated images have %d features, the reference %d (statistics of another network?)",
			gen.Dim, ref.Stats.Dim())
	}
	st, err := metrics.FitStats(gen.Features, gen.N, gen.Dim)
	if err != nil {
		return nil, fmt.Errorf("features: %w", err)
	}
	r := &Report{N: gen.N}
	if r.FID, err = metrics.FrechetDistance(st, ref.Stats); err != nil {
		return nil, fmt.Errorf("features: %w", err)
	}
	if rf := ref.Features; rf != nil && gen.N >= 2 && rf.N >= 2 && min(o.KIDSubsetSize, gen.N, rf.N) >= 2 {
		r.KID, r.KIDStd, err = metrics.KID(gen.Features, rf.Features, gen.N, rf.N, gen.Dim, o.KIDSubsets, o.KIDSubsetSize, o.Seed)
		if err != nil {
			return nil, fmt.Errorf("features: %w", err)
		}
		r.HasKID = true
	}
	if gen.Classes > 0 {
		r.Histogram = make([]int, gen.Classes)
		for _, c := range gen.ArgMax() {
			r.Histogram[c]++
		}
		if o.ISSplits >= 1 && gen.N >= o.ISSplits {
			r.IS, r.ISStd, err = metrics.InceptionScore(gen.Probs, gen.N, gen.Classes, o.ISSplits)
			if err != nil {
				return nil, fmt.Errorf("features: %w", err)
			}
			r.HasIS = true
		}
	}
	return r, nil
}

// Evaluate extracts the features of the generated images gen with ext and
// scores them against ref.
func Evaluate(ctx context.Context, ext Extractor, gen *data.Dataset, ref *Reference, o Options) (*Report, error) {
	fs, err := Extract(ctx, ext, gen, ExtractOptions{Batch: o.Batch, OnBatch: o.OnBatch})
	if err != nil {
		return nil, err
	}
	return Compare(fs, ref, o)
}
