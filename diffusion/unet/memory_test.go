package unet

import (
	"testing"

	"github.com/ddpm-go/ddpm/torch"
)

// Forward and backward passes in scopes leave no tensor behind: after the
// model is closed the live-tensor count is back where it started.
func TestForwardBackwardLeaksNothing(t *testing.T) {
	start := torch.LiveTensors()
	c := preset(t, "tiny")
	c.NumClasses = 3
	gen := newGen(t, 1)
	u, err := New(c, torch.CPU, torch.Float32, gen)
	if err != nil {
		t.Fatal(err)
	}
	u.SetTraining(true, gen)
	afterNew := torch.LiveTensors()
	for i := range 50 {
		s := torch.NewScope(torch.Grad)
		x, tt, labels := randomInputs(s, c, 4, gen)
		if i%2 == 1 {
			labels = nil // the null-label path
		}
		y := u.Forward(s, x, tt, labels)
		s.Backward(s.MSELoss(y, s.Randn(y.Shape(), torch.Float32, torch.CPU, gen), torch.ReduceMean))
		for _, p := range u.Params() {
			s.Grad(p.T)
		}
		err := s.Err()
		s.Close()
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if d := torch.LiveTensors() - afterNew; d != 0 {
			t.Fatalf("step %d: %d tensors more than after New", i, d)
		}
	}
	u.Close()
	u.Close() // idempotent
	if d := torch.LiveTensors() - start; d != 0 {
		t.Errorf("%d tensors alive after Close", d)
	}
}
