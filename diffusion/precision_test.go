package diffusion

import (
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/torch"
)

// Check refuses, in one line, what a device cannot run: fp16 off CUDA, bf16
// on a CPU without bfloat16 instructions, an unknown precision.
func TestPrecisionCheck(t *testing.T) {
	defer func(f func() bool) { cpuHasBF16 = f }(cpuHasBF16)
	cuda := torch.Device{Type: torch.DeviceCUDA}
	for _, tc := range []struct {
		p       Precision
		dev     torch.Device
		hasBF16 bool
		want    string // "" = accepted
	}{
		{Float32, torch.CPU, false, ""},
		{BF16, torch.CPU, true, ""},
		{BF16, torch.CPU, false, "needs a CPU with bfloat16 instructions"},
		{BF16, cuda, false, ""},
		{FP16, torch.CPU, true, "needs a CUDA device"},
		{FP16, cuda, false, ""},
		{"fp8", torch.CPU, true, "unknown precision"},
	} {
		cpuHasBF16 = func() bool { return tc.hasBF16 }
		err := tc.p.Check(tc.dev)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s on %s (bf16 %v): %v", tc.p, tc.dev, tc.hasBF16, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n")):
			t.Errorf("%s on %s (bf16 %v): error %v, want one line with %q", tc.p, tc.dev, tc.hasBF16, err, tc.want)
		}
	}
}

// recordingModel returns x in bfloat16 and records its scope's autocast.
type recordingModel struct{ autocast *torch.DType }

func (r recordingModel) Forward(s *torch.Scope, x, t, labels *torch.Tensor) *torch.Tensor {
	if dt, ok := s.Autocast(); ok {
		*r.autocast = dt
	}
	return s.ToDType(s.MulScalar(x, 3), torch.BFloat16)
}

// Wrap runs the forward under autocast and hands a float32 result to the
// caller's scope; Float32 leaves the model alone.
func TestPrecisionWrap(t *testing.T) {
	var seen torch.DType
	m := recordingModel{&seen}
	if _, ok := Float32.Wrap(m).(recordingModel); !ok {
		t.Error("Float32.Wrap changed the model")
	}
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	before := s.Len()
	x := s.FromFloat32s([]float32{0.5, -1, 2}, 3)
	out := BF16.Wrap(m).Forward(s, x, nil, nil)
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if seen != torch.BFloat16 {
		t.Errorf("the forward ran with autocast %q, want bfloat16", seen)
	}
	got, err := out.Float32s()
	if err != nil || out.DType() != torch.Float32 {
		t.Fatalf("result %s, %v", out.DType(), err)
	}
	if got[0] != 1.5 || got[1] != -3 || got[2] != 6 {
		t.Errorf("result %v, want [1.5 -3 6]", got)
	}
	if n := s.Len() - before; n != 2 { // x and the result; the forward's own tensors are freed
		t.Errorf("the caller's scope gained %d tensors, want 2", n)
	}
}
