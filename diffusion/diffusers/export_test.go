package diffusers

import (
	"reflect"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// Export then import gives the same configuration and the same weights,
// bit for bit, for the presets and for diffusers' own conventions.
func TestExportImportRoundTrip(t *testing.T) {
	tiny, _ := unet.Preset("tiny")
	cond := tiny
	cond.NumClasses = 3
	cifar, _ := unet.Preset("cifar10")
	cifar.NumClasses = 10
	orig := tiny
	orig.NormEps, orig.SinFirst, orig.FreqShift, orig.AsymmetricDownsample, orig.HeadChannels = 1e-6, true, 1, true, 8
	for name, cfg := range map[string]unet.Config{"tiny": tiny, "conditional": cond, "cifar10": cifar, "original": orig} {
		t.Run(name, func(t *testing.T) {
			if name == "cifar10" && testing.Short() {
				t.Skip("35M parameters")
			}
			g, _ := torch.NewGenerator(3, torch.CPU)
			defer g.Close()
			u, err := unet.New(cfg, torch.CPU, torch.Float32, g)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			dir := t.TempDir()
			if err := WriteUNet(dir, u.Config(), u.Params()); err != nil {
				t.Fatal(err)
			}
			back, err := LoadUNet(dir, torch.CPU)
			if err != nil {
				t.Fatal(err)
			}
			defer back.Close()
			if !reflect.DeepEqual(back.Config(), u.Config()) {
				t.Errorf("config\n%+v\nread back as\n%+v", u.Config(), back.Config())
			}
			a, b := u.Params(), back.Params()
			for i := range a {
				x, _ := a[i].T.Float32s()
				y, _ := b[i].T.Float32s()
				if a[i].Name != b[i].Name || !reflect.DeepEqual(x, y) {
					t.Fatalf("%s differs after the round trip", a[i].Name)
				}
			}
		})
	}
}

func TestExportRefusesWhatDiffusersCannotSay(t *testing.T) {
	cfg, _ := unet.Preset("cifar10")
	cfg.NumHeads, cfg.AttentionResolutions = 2, []int{32, 16} // 128- and 256-channel attention
	if _, err := UNetConfigFor(cfg); err == nil || !strings.Contains(err.Error(), "attention_head_dim") {
		t.Errorf("fixed head count over two widths: %v", err)
	}
}
