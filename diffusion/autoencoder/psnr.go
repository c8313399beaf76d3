package autoencoder

import (
	"errors"
	"fmt"
	"math"

	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/torch"
)

// ReconstructionPSNR is the mean over the images of d of the peak
// signal-to-noise ratio of their reconstructions, in dB:
//
//	PSNR_i = 10 log10(2² / mean((x_i - clamp(Decode(mean_i), -1, 1))²))
//
// with pixels in [-1, 1] (a peak-to-peak range of 2) and mean_i the
// posterior mean of Encode(x_i), so the figure is deterministic. Images go
// through the model batch at a time. An exact reconstruction counts as
// +Inf.
func ReconstructionPSNR(m *Model, d *data.Dataset, batch int) (float64, error) {
	if d.N == 0 || batch <= 0 {
		return 0, errors.New("autoencoder: PSNR needs images and a positive batch size")
	}
	per := d.C * d.H * d.W
	total := 0.0
	for start := 0; start < d.N; start += batch {
		n := min(batch, d.N-start)
		mse, err := func() ([]float64, error) {
			s := torch.NewScope(torch.Inference)
			defer s.Close()
			x := s.FromFloat32s(d.Images[start*per:(start+n)*per], int64(n), int64(d.C), int64(d.H), int64(d.W))
			x = s.ToDType(s.To(x, m.Device()), m.DType())
			mean, _ := m.Encode(s, x)
			y := s.Clamp(m.Decode(s, mean), -1, 1)
			mse := s.Mean(s.Square(s.Sub(y, x)), []int64{1, 2, 3}, false)
			if err := s.Err(); err != nil {
				return nil, err
			}
			return s.ToDType(mse, torch.Float64).Float64s()
		}()
		if err != nil {
			return 0, fmt.Errorf("autoencoder: PSNR: %w", err)
		}
		for _, e := range mse {
			total += 10 * math.Log10(4/e)
		}
	}
	return total / float64(d.N), nil
}
