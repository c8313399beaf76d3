package torch

import (
	"fmt"
	"testing"
)

// BenchmarkDropout times dropout on a 64x32x32x32 map (the small preset's
// largest at batch 64), in float32 and bfloat16: the shim's bulk draw of the
// mask on a dense map ("bulk") against libtorch's uniform_, lt_, mul_ and
// conversion, which a strided map of the same values takes ("libtorch").
// The two take turns within each run.
//
//	go test ./torch/ -run '^$' -bench Dropout
func BenchmarkDropout(b *testing.B) {
	for _, dt := range []DType{Float32, BFloat16} {
		for _, path := range []string{"bulk", "libtorch"} {
			b.Run(fmt.Sprintf("%v/%s", dt, path), func(b *testing.B) {
				s := NewScope(NoGrad)
				defer s.Close()
				g := opGen(b, 1)
				x := s.ToDType(s.Randn([]int64{64, 32, 32, 34}, Float32, CPU, nil), dt)
				if path == "bulk" {
					x = s.Contiguous(s.Narrow(x, 3, 1, 32))
				} else {
					x = s.Narrow(x, 3, 1, 32)
				}
				for b.Loop() {
					s.Dropout(x, 0.1, true, g).Close()
				}
				if err := s.Err(); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}
