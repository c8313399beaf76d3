package torch

import (
	"bytes"
	"testing"
)

// Under CPU bf16 autocast without autograd the shim casts a convolution's
// and a linear layer's float32 weights to bfloat16 once and keeps the copy
// while the weight is unchanged: the second call casts nothing, gives the
// first call's bits, and a weight changed in place is cast again (its
// result is that of a fresh copy of the changed weight).
func TestBF16WeightCopies(t *testing.T) {
	in := opScope(t, NoGrad)
	x := in.ToDType(in.ChannelsLast(in.Randn([]int64{2, 8, 6, 6}, Float32, CPU, nil)), BFloat16)
	x2 := in.ToDType(in.Randn([]int64{3, 8}, Float32, CPU, nil), BFloat16)
	for _, op := range []struct {
		name string
		w, b *Tensor
		f    func(s *Scope, w, b *Tensor) *Tensor
	}{
		{"conv2d", in.Randn([]int64{4, 8, 3, 3}, Float32, CPU, nil), in.Randn([]int64{4}, Float32, CPU, nil),
			func(s *Scope, w, b *Tensor) *Tensor { return s.Conv2d(x, w, b, Conv2dOptions{Padding: [2]int64{1, 1}}) }},
		{"linear", in.Randn([]int64{5, 8}, Float32, CPU, nil), in.Randn([]int64{5}, Float32, CPU, nil),
			func(s *Scope, w, b *Tensor) *Tensor { return s.Linear(x2, w, b) }},
	} {
		t.Run(op.name, func(t *testing.T) {
			s, err := NewAutocastScope(Inference, BFloat16)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			bits := func(y *Tensor) []byte {
				t.Helper()
				if y.DType() != BFloat16 {
					t.Fatalf("output %v, want bfloat16", y.DType())
				}
				return contiguousBytes(t, s, y)
			}
			var first, second []byte
			if c := castCalls(t, func() { first = bits(op.f(s, op.w, op.b)) }); c < 2 {
				t.Errorf("first call cast %d tensors, want the weight and the bias", c)
			}
			if c := castCalls(t, func() { second = bits(op.f(s, op.w, op.b)) }); c != 0 {
				t.Errorf("second call cast %d tensors, want none", c)
			}
			if !bytes.Equal(first, second) {
				t.Error("second call differs from the first")
			}
			in.MulScalarInPlace(op.w, 2)
			in.AddScalarInPlace(op.b, 1)
			changed := bits(op.f(s, op.w, op.b))
			fresh := bits(op.f(s, in.Clone(op.w), in.Clone(op.b)))
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(changed, fresh) || bytes.Equal(changed, first) {
				t.Errorf("after the weights changed in place: same as fresh copies %v, same as before %v; want true, false",
					bytes.Equal(changed, fresh), bytes.Equal(changed, first))
			}
		})
	}
}
