package diffusers

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/internal/fixture"
	"github.com/ddpm-go/ddpm/torch"
)

// On every UNet2DModel fixture the project's forward equals diffusers'
// output to 1e-4 (absolute, in fp32).
func TestUNetMatchesDiffusers(t *testing.T) {
	root := fixture.Diffusers(t)
	for _, name := range []string{"unet-ddpm", "unet-ddpm-legacy", "unet-classcond"} {
		t.Run(name, func(t *testing.T) {
			d := outputDiff(t, filepath.Join(root, name))
			t.Logf("max |ours - diffusers| = %.6g", d)
			if !(d <= 1e-4) {
				t.Errorf("max |ours - diffusers| = %g, want <= 1e-4", d)
			}
		})
	}
}

// outputDiff loads the U-Net of the folder dir and returns the largest
// difference of its output on the folder's io.safetensors input from the
// output diffusers gave.
func outputDiff(t *testing.T, dir string) float64 {
	t.Helper()
	u, err := LoadUNet(dir, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	io, _, err := s.LoadSafetensors(filepath.Join(dir, "io.safetensors"), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	out := u.Forward(s, io["sample"], io["timestep"], io["class_labels"])
	d, err := s.Max(s.Abs(s.Sub(out, io["output"])), nil, false).Item()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// copyFolder copies the fixture folder name into a temporary folder,
// letting edit change each file's bytes (path relative to the folder).
func copyFolder(t *testing.T, name string, edit func(path string, b []byte) []byte) string {
	t.Helper()
	src := filepath.Join(fixture.Diffusers(t), name)
	dir := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), edit(rel, b), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// A config without attention_head_dim takes diffusers' default, 8 channels
// a head, and reproduces diffusers' output (which the fixture's explicit 8
// made); null is one head as wide as the channels, another network.
func TestUNetAttentionHeadDimDefault(t *testing.T) {
	forward := func(edit func(string) string) float64 {
		return outputDiff(t, copyFolder(t, "unet-classcond", func(p string, b []byte) []byte {
			if p == filepath.Join("unet", "config.json") {
				return []byte(edit(string(b)))
			}
			return b
		}))
	}
	const line = `"attention_head_dim": 8,`
	if d := forward(func(c string) string { return strings.Replace(c, line, "", 1) }); !(d <= 1e-4) {
		t.Errorf("attention_head_dim left out: max |ours - diffusers| = %g, want <= 1e-4", d)
	}
	if d := forward(func(c string) string { return strings.Replace(c, line, `"attention_head_dim": null,`, 1) }); !(d > 1e-3) {
		t.Errorf("attention_head_dim null: max |ours - diffusers(8)| = %g, want a different network", d)
	}
}

// A DDIMPipeline folder samples with DDIM whatever scheduler it holds, as
// diffusers' DDIMPipeline does (DDIMScheduler.from_config): the DDPM
// config's schedule, clipping and spacing, DDIM's set_alpha_to_one.
func TestDDIMPipelineFolder(t *testing.T) {
	dir := copyFolder(t, "unet-ddpm", func(p string, b []byte) []byte {
		if p == "model_index.json" {
			return []byte(strings.Replace(string(b), `"DDPMPipeline"`, `"DDIMPipeline"`, 1))
		}
		return b
	})
	f, err := Load(dir, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, o := f.Scheduler, f.Sampling
	if c.ClassName != DDIMScheduler || !c.SetAlphaToOne || c.VarianceType != nil || c.TimestepSpacing != "leading" || !c.ClipSample {
		t.Errorf("scheduler %+v, want DDIMScheduler from the DDPM config", c)
	}
	if o.Sampler != sampler.DDIM || o.FinalAlphaCumprodAtZero || o.Spacing != diffusion.SpacingLeading || o.Clip != sampler.ClipStatic {
		t.Errorf("sampling %+v, want DDIM to alpha = 1, leading, clipped", o)
	}
	// A DPM-Solver config's own defaults carry over where DDIM has the
	// field: its linspace spacing, which DDIM here refuses by name.
	dpm, err := DefaultSchedulerConfig(DPMSolverScheduler)
	if err != nil {
		t.Fatal(err)
	}
	d, err := dpm.As(DDIMScheduler)
	if err != nil {
		t.Fatal(err)
	}
	if d.TimestepSpacing != "linspace" || !d.SetAlphaToOne || d.ClipSample != true {
		t.Errorf("DPM-Solver as DDIM: %+v", d)
	}
}

// The google/ddpm-cifar10-32 config builds exactly diffusers' 35,746,307
// parameters, and the names and shapes match its key list one to one.
func TestCIFAR10ConfigMatchesKeyList(t *testing.T) {
	root := fixture.Diffusers(t)
	dir := filepath.Join(root, "ddpm-cifar10-32")
	cfg, err := ReadUNetConfig(filepath.Join(dir, "unet", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	mc, err := cfg.Model()
	if err != nil {
		t.Fatal(err)
	}
	if n := mc.NumParams(); n != 35746307 {
		t.Errorf("NumParams = %d, want 35746307", n)
	}
	f, err := os.Open(filepath.Join(dir, "keys.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) == 3 && fields[0] != "TOTAL" {
			want[fields[0]] = fields[1]
		}
	}
	u, err := unet.New(mc, torch.CPU, torch.Float32, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if got := len(u.Params()); got != len(want) || got != 328 {
		t.Errorf("%d tensors, key list %d, want 328", got, len(want))
	}
	for _, p := range u.Params() {
		name, linear, err := DiffusersName(p.Name, len(mc.ChannelMult))
		if err != nil {
			t.Fatal(err)
		}
		shape := p.T.Shape()
		if linear && strings.HasSuffix(name, ".weight") {
			shape = shape[:2]
		}
		dims := make([]string, len(shape))
		for i, d := range shape {
			dims[i] = strconv.FormatInt(d, 10)
		}
		if w, ok := want[name]; !ok || w != strings.Join(dims, ",") {
			t.Errorf("%s -> %s %v: key list has %q (present %v)", p.Name, name, shape, w, ok)
		}
		delete(want, name)
	}
	for name := range want {
		t.Errorf("key %s has no parameter here", name)
	}
}

func TestUNetConfigErrors(t *testing.T) {
	root := fixture.Diffusers(t)
	base, err := ReadUNetConfig(filepath.Join(root, "unet-ddpm", "unet", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		edit func(*UNetConfig)
		want string
	}{
		{func(c *UNetConfig) { c.ActFn = "gelu" }, "act_fn"},
		{func(c *UNetConfig) { c.TimeEmbeddingType = "fourier" }, "time_embedding_type"},
		{func(c *UNetConfig) { c.DownBlockTypes[0] = "CrossAttnDownBlock2D" }, "CrossAttnDownBlock2D"},
		{func(c *UNetConfig) { c.UpBlockTypes[0] = "AttnUpBlock2D" }, "mirror"},
		{func(c *UNetConfig) { c.ResnetTimeScaleShift = "scale_shift" }, "resnet_time_scale_shift"},
		{func(c *UNetConfig) { c.BlockOutChannels = []int{16, 24, 32} }, "multiple"},
		{func(c *UNetConfig) { c.MidBlockType = nil }, "mid_block_type = null"},
	} {
		cfg := base
		cfg.DownBlockTypes = append([]string(nil), base.DownBlockTypes...)
		cfg.UpBlockTypes = append([]string(nil), base.UpBlockTypes...)
		c.edit(&cfg)
		if _, err := cfg.Model(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.want, err)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"_class_name":"UNet2DModel","sample_size":8,"mystery":1}`), 0o644)
	if _, err := ReadUNetConfig(filepath.Join(dir, "config.json")); err == nil || !strings.Contains(err.Error(), "mystery") {
		t.Errorf("unknown field: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"_class_name":"AutoencoderKL"}`), 0o644)
	if _, err := ReadUNetConfig(filepath.Join(dir, "config.json")); err == nil || !strings.Contains(err.Error(), "AutoencoderKL") {
		t.Errorf("another class: %v", err)
	}
	if _, err := LoadUNet(t.TempDir(), torch.CPU); err == nil || !strings.Contains(err.Error(), "no UNet2DModel") {
		t.Errorf("empty folder: %v", err)
	}
	// Weights of another configuration: named mismatch, nothing loaded.
	mc, _ := base.Model()
	mc.NumResBlocks = 1
	u, err := unet.New(mc, torch.CPU, torch.Float32, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	err = LoadUNetWeights(filepath.Join(root, "unet-ddpm", "unet", "diffusion_pytorch_model.safetensors"), u)
	if err == nil || !strings.Contains(err.Error(), "unexpected down_blocks") {
		t.Errorf("weights of another config: %v", err)
	}
}

// A weights file whose header promises more data than the file holds, or a
// folder without a scheduler, is one error naming the file.
func TestBadFolders(t *testing.T) {
	src := filepath.Join(fixture.Diffusers(t), "unet-ddpm")
	dir := t.TempDir()
	for _, f := range []string{"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".safetensors") {
			b = b[:len(b)/2] // the header now lies about the data
		}
		os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Load(dir, torch.CPU); err == nil || !strings.Contains(err.Error(), "diffusion_pytorch_model.safetensors") {
		t.Errorf("truncated weights: %v", err)
	}
	os.Remove(filepath.Join(dir, "scheduler", "scheduler_config.json"))
	if _, err := Load(dir, torch.CPU); err == nil || !strings.Contains(err.Error(), "scheduler_config.json") {
		t.Errorf("no scheduler: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "model_index.json"), []byte(`{"_class_name": "StableDiffusionPipeline"}`), 0o644)
	if _, err := Load(dir, torch.CPU); err == nil || !strings.Contains(err.Error(), "StableDiffusionPipeline") {
		t.Errorf("another pipeline: %v", err)
	}
}
