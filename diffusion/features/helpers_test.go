package features

import (
	"math"
	"math/rand/v2"

	"github.com/ddpm-go/ddpm/diffusion/data"
)

// patterns makes n labelled size×size gray images of three classes:
// horizontal stripes, vertical stripes and a disk, each with a random
// phase or radius and noise.
func patterns(n, size int, seed uint64) *data.Dataset {
	rng := rand.New(rand.NewPCG(seed, 1))
	ds := &data.Dataset{N: n, C: 1, H: size, W: size, Images: make([]float32, n*size*size),
		Labels: make([]int64, n), NumClasses: 3, ClassNames: []string{"horizontal", "vertical", "disk"}, Source: "patterns"}
	for i := range n {
		label := int64(i % 3)
		ds.Labels[i] = label
		phase := rng.Float64() * 2 * math.Pi
		radius := float64(size) * (0.2 + 0.2*rng.Float64())
		img := ds.Image(i)
		for y := range size {
			for x := range size {
				var v float64
				switch label {
				case 0:
					v = math.Sin(float64(y)*1.3 + phase)
				case 1:
					v = math.Sin(float64(x)*1.3 + phase)
				default:
					dx, dy := float64(x)-float64(size)/2, float64(y)-float64(size)/2
					v = -1
					if dx*dx+dy*dy < radius*radius {
						v = 1
					}
				}
				v += 0.3 * rng.NormFloat64()
				img[y*size+x] = float32(max(-1, min(1, v)))
			}
		}
	}
	return ds
}

// quickTraining trains quickly on patterns.
var quickTraining = TrainOptions{Epochs: 4, BatchSize: 32, LR: 3e-3, Width: 8, Seed: 3}
