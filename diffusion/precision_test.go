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
