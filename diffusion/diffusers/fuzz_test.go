package diffusers

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ddpm-go/ddpm/internal/fixture"
)

func addFiles(f *testing.F, names ...string) {
	root := fixture.Diffusers(f)
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(root, n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// Any bytes as a UNet2DModel config.json: an error or a configuration that
// validates, never a panic; the model it maps to is never absurdly large
// without saying so (Model validates it).
func FuzzParseUNetConfig(f *testing.F) {
	addFiles(f, "unet-ddpm/unet/config.json", "unet-classcond/unet/config.json", "ddpm-cifar10-32/unet/config.json")
	f.Add([]byte(`{"_class_name":"UNet2DModel","block_out_channels":[0]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseUNetConfig(b)
		if err != nil {
			return
		}
		if m, err := c.Model(); err == nil {
			if err := m.Validate(); err != nil {
				t.Fatalf("Model() gave an invalid config: %v", err)
			}
		}
	})
}

// Any bytes as a scheduler_config.json: an error, or a config whose
// mappings either work or fail cleanly.
func FuzzParseSchedulerConfig(f *testing.F) {
	addFiles(f, "schedulers/ddpm_1/scheduler_config.json", "schedulers/ddim_2/scheduler_config.json", "unet-ddpm/scheduler/scheduler_config.json")
	f.Add([]byte(`{"_class_name":"DPMSolverMultistepScheduler","lambda_min_clipped":-Infinity}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseSchedulerConfig(b)
		if err != nil {
			return
		}
		c.Schedule()
		c.Target()
		c.SamplerOptions()
		if _, err := EncodeSchedulerConfig(c); err != nil {
			t.Fatalf("a config that parsed does not encode: %v", err)
		}
	})
}
