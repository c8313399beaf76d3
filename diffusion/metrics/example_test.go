package metrics_test

import (
	"fmt"
	"log"

	"github.com/ddpm-go/ddpm/diffusion/metrics"
)

func ExampleFrechetDistance() {
	// Two sets of 2-dimensional features, one row per sample.
	real, n, d, err := metrics.Flatten([][]float64{{0, 0}, {2, 0}, {0, 2}, {2, 2}})
	if err != nil {
		log.Fatal(err)
	}
	fake := []float64{1, 1, 3, 1, 1, 3, 3, 3} // the same, shifted by (1, 1)
	a, err := metrics.FitStats(real, n, d)
	if err != nil {
		log.Fatal(err)
	}
	b, err := metrics.FitStats(fake, 4, d)
	if err != nil {
		log.Fatal(err)
	}
	fid, err := metrics.FrechetDistance(a, b)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("mu %v, FID %.6f\n", a.Mu, fid)
	// Output: mu [1 1], FID 2.000000
}

func ExampleInceptionScore() {
	// Four confident predictions spread over two classes.
	probs := []float64{
		1, 0,
		0, 1,
		1, 0,
		0, 1,
	}
	is, _, err := metrics.InceptionScore(probs, 4, 2, 1)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("IS %.3f\n", is)
	// Output: IS 2.000
}
