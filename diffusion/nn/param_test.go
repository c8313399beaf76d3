package nn

import (
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/torch"
)

// CheckDevice names a parameter on another device than the one asked for.
func TestCheckDevice(t *testing.T) {
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	ps := []Param{{"w", s.Ones([]int64{2}, torch.Float32, torch.CPU)}}
	if err := CheckDevice(ps, torch.CPU); err != nil {
		t.Error(err)
	}
	if err := CheckDevice(ps, torch.CUDA(0)); err == nil || !strings.Contains(err.Error(), "parameter w is on cpu, not on cuda:0") {
		t.Errorf("a CPU parameter checked for cuda:0: %v", err)
	}
}
