package torch

import (
	"fmt"
	"math"
	"testing"
)

// GroupNorm of channels-last maps gives the values of the NCHW kernel (which
// TestOpsGroupNorm checks by hand) and channels-last maps, with few channels
// per group (where the shim runs the NCHW kernel on a copy) and with many.
func TestGroupNormChannelsLast(t *testing.T) {
	g := opGen(t, 7)
	for _, groups := range []int64{4, 1} { // 2 and 8 channels per group
		t.Run(fmt.Sprintf("%d groups", groups), func(t *testing.T) {
			s := opScope(t, NoGrad)
			x := s.Randn([]int64{3, 8, 4, 4}, Float64, CPU, g)
			w := s.Randn([]int64{8}, Float64, CPU, g)
			b := s.Randn([]int64{8}, Float64, CPU, g)
			want := s.GroupNorm(x, groups, w, b, 1e-5)
			got := s.GroupNorm(s.ChannelsLast(x), groups, w, b, 1e-5)
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			if m, err := got.Meta(); err != nil || m.Contiguous {
				t.Errorf("output is NCHW (meta %+v, %v), want channels-last", m, err)
			}
			gv, _ := got.Float64s()
			wv, _ := want.Float64s()
			for i := range wv {
				if math.Abs(gv[i]-wv[i]) > 1e-12 {
					t.Fatalf("element %d: %g, NCHW gives %g", i, gv[i], wv[i])
				}
			}
		})
	}
}
