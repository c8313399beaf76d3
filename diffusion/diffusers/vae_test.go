package diffusers

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/autoencoder"
	"github.com/ddpm-go/ddpm/internal/fixture"
	"github.com/ddpm-go/ddpm/torch"
)

// vaeFixture is the fixture folder holding vae/ and io.safetensors.
func vaeFixture(t *testing.T) string { return filepath.Join(fixture.Diffusers(t), "vae") }

// encodeDecode runs Encode on x and Decode on z and returns the mean,
// log-variance and decoded images on the host.
func encodeDecode(t *testing.T, m *autoencoder.Model, x, z *torch.Tensor) [3][]float32 {
	t.Helper()
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	mean, logVar := m.Encode(s, x)
	dec := m.Decode(s, z)
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	var out [3][]float32
	for i, v := range []*torch.Tensor{mean, logVar, dec} {
		f, err := v.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = f
	}
	return out
}

func maxDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// The fixture's pipeline-style folder (vae/ inside) loads, and the loaded
// model reproduces diffusers' encode mean, log-variance and decode to 1e-4.
func TestAutoencoderMatchesDiffusers(t *testing.T) {
	m, err := LoadAutoencoder(vaeFixture(t), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	checkMatchesDiffusers(t, m)
}

// checkMatchesDiffusers compares m's encode mean, log-variance and decode
// of the fixture's inputs with diffusers' outputs, to 1e-4.
func checkMatchesDiffusers(t *testing.T, m *autoencoder.Model) {
	t.Helper()
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	io, _, err := s.LoadSafetensors(filepath.Join(vaeFixture(t), "io.safetensors"), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	got := encodeDecode(t, m, io["sample"], io["latent"])
	for i, name := range []string{"latent_mean", "latent_logvar", "decoded"} {
		want, err := io[name].Float32s()
		if err != nil {
			t.Fatal(err)
		}
		if len(want) != len(got[i]) {
			t.Fatalf("%s: %d values, want %d", name, len(got[i]), len(want))
		}
		d := maxDiff(got[i], want)
		t.Logf("%s: max |ours - diffusers| = %.3g", name, d)
		if !(d <= 1e-4) {
			t.Errorf("%s: max |ours - diffusers| = %g, want <= 1e-4", name, d)
		}
	}
}

// Exporting the fixture's model writes a config.json with the same keys
// and values as diffusers' own, and weights that read back bit for bit.
func TestAutoencoderExportLikeDiffusers(t *testing.T) {
	src := filepath.Join(vaeFixture(t), "vae")
	m, err := LoadAutoencoder(src, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	dir := t.TempDir()
	if err := WriteAutoencoder(dir, m.Config(), m.Params()); err != nil {
		t.Fatal(err)
	}
	read := func(p string) map[string]any {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if got, want := read(filepath.Join(dir, "config.json")), read(filepath.Join(src, "config.json")); !reflect.DeepEqual(got, want) {
		t.Errorf("exported config.json\n%v\ndiffers from diffusers'\n%v", got, want)
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	a, _, err := s.LoadSafetensors(filepath.Join(src, "diffusion_pytorch_model.safetensors"), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := s.LoadSafetensors(filepath.Join(dir, "diffusion_pytorch_model.safetensors"), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != len(b) {
		t.Fatalf("exported %d tensors, diffusers' file has %d", len(b), len(a))
	}
	for name, x := range a {
		y, ok := b[name]
		if !ok {
			t.Fatalf("%s missing from the export", name)
		}
		xs, _ := x.Float32s()
		ys, _ := y.Float32s()
		if !reflect.DeepEqual(xs, ys) || !reflect.DeepEqual(x.Shape(), y.Shape()) {
			t.Fatalf("%s differs in the export", name)
		}
	}
}

// A model of every optional shape (no quantisation convolutions, no
// mid-block attention, three levels, a shift factor and latent statistics)
// exports and re-imports to the same configuration and bit-identical
// outputs.
func TestAutoencoderRoundTrip(t *testing.T) {
	shift := -0.125
	plain := autoencoder.DefaultConfig()
	plain.InChannels, plain.OutChannels, plain.LatentChannels = 1, 2, 3
	plain.BlockOutChannels, plain.NormNumGroups, plain.LayersPerBlock, plain.SampleSize = []int{8, 8, 16}, 4, 2, 8
	plain.DownBlockTypes = []string{"DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"}
	plain.UpBlockTypes = []string{"UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"}
	bare := plain.Clone()
	bare.UseQuantConv, bare.UsePostQuantConv, bare.MidBlockAddAttention, bare.ForceUpcast = false, false, false, false
	bare.ScalingFactor, bare.ShiftFactor = 0.3611, &shift
	bare.LatentsMean, bare.LatentsStd = []float64{0.1, -0.2, 0.3}, []float64{1, 2, 3}
	for name, cfg := range map[string]autoencoder.Config{"plain": plain, "bare": bare} {
		t.Run(name, func(t *testing.T) {
			g, _ := torch.NewGenerator(5, torch.CPU)
			defer g.Close()
			m, err := autoencoder.New(cfg, torch.CPU, torch.Float32, g)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			dir := t.TempDir()
			if err := WriteAutoencoder(dir, m.Config(), m.Params()); err != nil {
				t.Fatal(err)
			}
			back, err := LoadAutoencoder(dir, torch.CPU)
			if err != nil {
				t.Fatal(err)
			}
			defer back.Close()
			if !reflect.DeepEqual(back.Config(), m.Config()) {
				t.Errorf("config\n%+v\nread back as\n%+v", m.Config(), back.Config())
			}
			s := torch.NewScope(torch.Inference)
			defer s.Close()
			x := s.Randn([]int64{2, 1, 8, 8}, torch.Float32, torch.CPU, g)
			z := s.Randn([]int64{2, 3, 2, 2}, torch.Float32, torch.CPU, g)
			a, b := encodeDecode(t, m, x, z), encodeDecode(t, back, x, z)
			if !reflect.DeepEqual(a, b) {
				t.Errorf("outputs differ after the round trip")
			}
		})
	}
}

// copyVAE copies the fixture's vae/ folder into a temporary folder, letting
// edit change each file's bytes on the way.
func copyVAE(t *testing.T, edit func(name string, b []byte) []byte) string {
	t.Helper()
	src := filepath.Join(vaeFixture(t), "vae")
	dir := t.TempDir()
	for _, f := range []string{"config.json", "diffusion_pytorch_model.safetensors"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), edit(f, b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// rewriteWeights loads the fixture's weights, lets edit change the map,
// and saves them into dir.
func rewriteWeights(t *testing.T, dir string, edit func(s *torch.Scope, w map[string]*torch.Tensor)) {
	t.Helper()
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	w, _, err := s.LoadSafetensors(filepath.Join(vaeFixture(t), "vae", "diffusion_pytorch_model.safetensors"), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	edit(s, w)
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if err := torch.SaveSafetensors(filepath.Join(dir, "diffusion_pytorch_model.safetensors"), w, nil); err != nil {
		t.Fatal(err)
	}
}

// Older files name the middle blocks' attention query, key, value and
// proj_attn; diffusers renames them on load, and so does the project: the
// model then reproduces diffusers' outputs as from current names.
func TestAutoencoderLegacyAttentionNames(t *testing.T) {
	dir := copyVAE(t, func(_ string, b []byte) []byte { return b })
	legacy := strings.NewReplacer(".to_q.", ".query.", ".to_k.", ".key.", ".to_v.", ".value.", ".to_out.0.", ".proj_attn.")
	renamed := 0
	rewriteWeights(t, dir, func(s *torch.Scope, w map[string]*torch.Tensor) {
		for k, v := range w {
			if n := legacy.Replace(k); n != k {
				delete(w, k)
				w[n] = v
				renamed++
			}
		}
	})
	if renamed == 0 {
		t.Fatal("the fixture has no attention weights to rename")
	}
	m, err := LoadAutoencoder(dir, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	checkMatchesDiffusers(t, m)
}

// Broken folders fail in one line naming the problem, and nothing leaks.
func TestAutoencoderBadFolders(t *testing.T) {
	keep := func(_ string, b []byte) []byte { return b }
	start := torch.LiveTensors()
	for _, c := range []struct {
		name  string
		setup func(t *testing.T) string
		want  []string
	}{
		{"truncated weights", func(t *testing.T) string {
			return copyVAE(t, func(f string, b []byte) []byte {
				if strings.HasSuffix(f, ".safetensors") {
					return b[:len(b)/2]
				}
				return b
			})
		}, []string{"diffusion_pytorch_model.safetensors"}},
		{"config and weights disagree", func(t *testing.T) string {
			return copyVAE(t, func(f string, b []byte) []byte {
				if f == "config.json" {
					return []byte(strings.Replace(string(b), `"latent_channels": 4`, `"latent_channels": 2`, 1))
				}
				return b
			})
		}, []string{"does not fit its config.json", "decoder.conv_in.weight has shape [32 4 3 3], model wants [32 2 3 3]"}},
		{"missing tensor", func(t *testing.T) string {
			dir := copyVAE(t, keep)
			rewriteWeights(t, dir, func(_ *torch.Scope, w map[string]*torch.Tensor) { delete(w, "post_quant_conv.bias") })
			return dir
		}, []string{"missing post_quant_conv.bias"}},
		{"extra tensor", func(t *testing.T) string {
			dir := copyVAE(t, keep)
			rewriteWeights(t, dir, func(s *torch.Scope, w map[string]*torch.Tensor) {
				w["encoder.down_blocks.0.attentions.0.to_q.weight"] = s.Zeros([]int64{16, 16}, torch.Float32, torch.CPU)
			})
			return dir
		}, []string{"unexpected encoder.down_blocks.0.attentions.0.to_q.weight"}},
		{"NaN weight", func(t *testing.T) string {
			dir := copyVAE(t, keep)
			rewriteWeights(t, dir, func(s *torch.Scope, w map[string]*torch.Tensor) {
				w["decoder.mid_block.attentions.0.to_k.bias"] = s.Full([]int64{32}, math.NaN(), torch.Float32, torch.CPU)
			})
			return dir
		}, []string{"decoder.mid_block.attentions.0.to_k.bias", "32 values that are not finite"}},
		{"a U-Net folder", func(t *testing.T) string {
			return filepath.Join(fixture.Diffusers(t), "unet-ddpm", "unet")
		}, []string{`_class_name "UNet2DModel" is not an AutoencoderKL`, "config.json"}},
		{"no config", func(t *testing.T) string { return t.TempDir() }, []string{"no vae/config.json"}},
		{"no weights", func(t *testing.T) string {
			dir := copyVAE(t, keep)
			os.Remove(filepath.Join(dir, "diffusion_pytorch_model.safetensors"))
			return dir
		}, []string{"has no diffusion_pytorch_model.safetensors"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := LoadAutoencoder(c.setup(t), torch.CPU)
			if err == nil {
				m.Close()
				t.Fatal("loaded")
			}
			msg := err.Error()
			t.Log(msg)
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "diffusers: ") {
				t.Errorf("not one line starting with the package: %q", msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
		})
	}
	if d := torch.LiveTensors() - start; d != 0 {
		t.Errorf("%d tensors alive after the failed loads", d)
	}
}

func TestParseAutoencoderConfigErrors(t *testing.T) {
	const head = `{"_class_name": "AutoencoderKL", `
	for _, c := range []struct{ json, want string }{
		{head + `"in_channels": "3"}`, "in_channels: a JSON string where int is needed"},
		{head + `"block_out_channels": [16.5]}`, "block_out_channels: a JSON number 16.5 where int is needed"},
		{head + `"use_quant_conv": 1}`, "use_quant_conv: a JSON number where bool is needed"},
		{head + `"layers_per_block": null}`, "layers_per_block is null"},
		{head + `"Latent_Channels": 8}`, `key "Latent_Channels" is not "latent_channels"`},
		{head + `"down_block_types": ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"], "block_out_channels": [32, 64]}`,
			`down_block_types[1] "AttnDownEncoderBlock2D" is not supported`},
		{head + `"up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"]}`, "up_block_types has 2 entries"},
		{head + `"act_fn": "relu"}`, "act_fn"},
		{head + `"norm_num_groups": 24}`, "not divisible by norm_num_groups 24"},
		{`{"_class_name": "VQModel"}`, `"VQModel" is not an AutoencoderKL`},
		{`{}`, `_class_name "" is not an AutoencoderKL`},
		{`[1, 2]`, "not a JSON object"},
		{head + `"in_channels": 3} {}`, "data after the JSON object"},
		{head, "unexpected EOF"},
	} {
		_, err := ParseAutoencoderConfig([]byte(c.json))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "diffusers: ") {
			t.Errorf("%s: %v, want %q", c.json, err, c.want)
		}
	}
	// What diffusers tolerates: unknown keys (with any value), null where
	// null is a value, and left-out keys at the constructor's defaults.
	c, err := ParseAutoencoderConfig([]byte(head + `"_name_or_path": null, "extra": [1], "shift_factor": null, "latents_std": null}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := autoencoder.DefaultConfig(); !reflect.DeepEqual(c, want) {
		t.Errorf("defaults: %+v, want %+v", c, want)
	}
	if _, err := ReadAutoencoderConfig(filepath.Join(t.TempDir(), "config.json")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
