package main

import (
	"testing"

	"github.com/ddpm-go/ddpm/torch"
)

// --precision bf16 trains the tiny U-Net (GroupNorm, attention) on the CPU.
func TestTrainBF16(t *testing.T) {
	if !torch.CPUHasBF16() {
		t.Skip("this CPU has no bfloat16 instructions")
	}
	tinyRun(t, "--precision", "bf16")
}
