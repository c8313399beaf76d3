package sampler

import (
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/torch"
)

func mustSchedule(t testing.TB, cfg diffusion.ScheduleConfig) *diffusion.Schedule {
	t.Helper()
	s, err := diffusion.NewSchedule(cfg)
	if err != nil {
		t.Fatalf("NewSchedule(%+v): %v", cfg, err)
	}
	return s
}

func values(t *testing.T, x *torch.Tensor) []float64 {
	t.Helper()
	v, err := x.Float64s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}
