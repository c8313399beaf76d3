package features_test

import (
	"fmt"

	"github.com/ddpm-go/ddpm/diffusion/features"
)

// Compare scores features that an Extractor produced (here written by
// hand: four images with two features each) against a reference.
func ExampleCompare() {
	ref, err := features.NewReference(&features.FeatureSet{N: 4, Dim: 2,
		Features: []float64{0, 0, 1, 1, 2, 0, 3, 1}})
	if err != nil {
		panic(err)
	}
	// The same spread, shifted by 1 in the first feature.
	gen := &features.FeatureSet{N: 4, Dim: 2, Features: []float64{1, 0, 2, 1, 3, 0, 4, 1},
		Classes: 2, Probs: []float64{1, 0, 0, 1, 1, 0, 1, 0}}
	r, err := features.Compare(gen, ref, features.Options{KIDSubsets: 1, ISSplits: 1})
	if err != nil {
		panic(err)
	}
	fmt.Printf("fid %.3f\n", r.FID)
	fmt.Println("histogram", r.Histogram)
	// Output:
	// fid 1.000
	// histogram [3 1]
}
