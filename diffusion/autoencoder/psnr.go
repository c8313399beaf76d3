package autoencoder

import (
	"errors"
	"fmt"
	"math"

	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/torch"
)

// Reconstruct returns the reconstructions of n images of c×h×w float32
// pixels in [-1, 1] (NCHW, in one slice): Decode of the posterior mean of
// Encode, clamped to [-1, 1], so the result is deterministic. The images
// go through the model in one batch.
func Reconstruct(m *Model, images []float32, n, c, h, w int) ([]float32, error) {
	if n <= 0 || len(images) != n*c*h*w {
		return nil, fmt.Errorf("autoencoder: reconstruct: %d values for %d images of %dx%dx%d", len(images), n, c, h, w)
	}
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	x := s.FromFloat32s(images, int64(n), int64(c), int64(h), int64(w))
	x = s.ToDType(s.To(x, m.Device()), m.DType())
	mean, _ := m.Encode(s, x)
	y := s.ToDType(s.Clamp(m.Decode(s, mean), -1, 1), torch.Float32)
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("autoencoder: reconstruct: %w", err)
	}
	return s.To(y, torch.CPU).Float32s()
}

// ReconstructionPSNR is the mean over the images of d of the peak
// signal-to-noise ratio of their reconstructions (see Reconstruct), in dB:
//
//	PSNR_i = 10 log10(2² / mean((x_i - Reconstruct(x_i))²))
//
// with pixels in [-1, 1] (a peak-to-peak range of 2); the squared errors
// are summed in float64. Images go through the model batch at a time. An
// exact reconstruction counts as +Inf.
func ReconstructionPSNR(m *Model, d *data.Dataset, batch int) (float64, error) {
	if d.N == 0 || batch <= 0 {
		return 0, errors.New("autoencoder: PSNR needs images and a positive batch size")
	}
	per := d.C * d.H * d.W
	total := 0.0
	for start := 0; start < d.N; start += batch {
		n := min(batch, d.N-start)
		x := d.Images[start*per : (start+n)*per]
		y, err := Reconstruct(m, x, n, d.C, d.H, d.W)
		if err != nil {
			return 0, err
		}
		for i := range n {
			se := 0.0
			for j := i * per; j < (i+1)*per; j++ {
				e := float64(x[j]) - float64(y[j])
				se += e * e
			}
			total += 10 * math.Log10(4/(se/float64(per)))
		}
	}
	return total / float64(d.N), nil
}
