package sampler

import (
	"os/exec"
	"strings"
	"testing"
)

// Sampling never depends on training: a service that samples links no
// trainer, optimizer or checkpoint writer.
func TestImportsNoTraining(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/ddpm-go/ddpm/diffusion/sampler").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"/diffusion/train", "/diffusion/optim", "/diffusion/checkpoint", "/diffusion/data"} {
			if strings.HasSuffix(pkg, banned) {
				t.Errorf("the sampler depends on %s", pkg)
			}
		}
	}
}
