package features

import (
	"math"

	"github.com/ddpm-go/ddpm/torch"
)

// resizeMatrix is the out×in matrix of bilinear resampling from in pixels to
// out along one axis, as StyleGAN's Inception wrapper resizes (an affine grid
// sampled bilinearly with border padding): output pixel i reads the input at
// i·in/out, between pixels ⌊i·in/out⌋ and the next, clamped to the last.
// Applied on both axes, Rᵧ X Rₓᵀ resizes an image X.
func resizeMatrix(out, in int) []float32 {
	m := make([]float32, out*in)
	for i := range out {
		src := min(float64(i)*float64(in)/float64(out), float64(in-1))
		i0 := int(math.Floor(src))
		i1 := min(i0+1, in-1)
		w := src - float64(i0)
		m[i*in+i0] += float32(1 - w)
		m[i*in+i1] += float32(w)
	}
	return m
}

// resizeBilinear resizes x (N, C, H, W) to (N, C, size, size) with
// resizeMatrix, as two matrix products.
func resizeBilinear(s *torch.Scope, x *torch.Tensor, size int) *torch.Tensor {
	sh := x.Shape()
	if len(sh) != 4 {
		return x // reported by the caller's shape check
	}
	h, w := int(sh[2]), int(sh[3])
	if h == size && w == size {
		return x
	}
	ry := s.FromFloat32s(resizeMatrix(size, h), int64(size), int64(h))
	rxT := s.Transpose(s.FromFloat32s(resizeMatrix(size, w), int64(size), int64(w)), 0, 1)
	if dev := x.Device(); dev != torch.CPU {
		ry, rxT = s.To(ry, dev), s.To(rxT, dev)
	}
	return s.Matmul(s.Matmul(ry, x), rxT)
}
