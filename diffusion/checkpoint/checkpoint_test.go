package checkpoint_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

func weights(t *testing.T, s *torch.Scope) map[string]*torch.Tensor {
	t.Helper()
	w := map[string]*torch.Tensor{
		"model.w": s.Full([]int64{2}, 1, torch.Float32, torch.CPU),
		"ema.w":   s.Full([]int64{2}, 2, torch.Float32, torch.CPU),
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return w
}

// Meta survives Write and ReadMeta, and unknown keys are kept.
func TestMetaRoundTrip(t *testing.T) {
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	mc, _ := unet.Preset("tiny")
	want := checkpoint.Meta{
		Step: 7, EMAUpdates: 6, Schedule: diffusion.ScheduleConfig{Kind: diffusion.Cosine, T: 50, CosineS: 0.01, MaxBeta: 0.99},
		Target: diffusion.V, Model: &mc, ClassNames: []string{"a", "b"}, Data: "/data/x",
		Train: json.RawMessage(`{"steps":7}`), LossScale: "1024 3", Extra: map[string]string{"note": "hi"},
	}
	path := filepath.Join(t.TempDir(), "sub", checkpoint.Name(7))
	if err := checkpoint.Write(path, weights(t, s), want); err != nil {
		t.Fatal(err)
	}
	got, err := checkpoint.ReadMeta(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read %+v\nwant %+v", got, want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm()&0o044 != 0o044 {
		t.Errorf("checkpoint mode %v (%v), want readable by everyone", fi.Mode(), err)
	}
	params := []nn.Param{{Name: "w", T: s.Zeros([]int64{2}, torch.Float32, torch.CPU)}}
	if err := checkpoint.LoadWeights(path, "", params); err != nil {
		t.Fatal(err)
	}
	if v, _ := params[0].T.Float32s(); v[0] != 2 {
		t.Errorf("default weights are not the EMA: %v", v)
	}
	if err := checkpoint.LoadWeights(path, checkpoint.Raw, params); err != nil {
		t.Fatal(err)
	}
	if v, _ := params[0].T.Float32s(); v[0] != 1 {
		t.Errorf("raw weights: %v", v)
	}
}

// A checkpoint written before the snake_case schedule keys, prediction_type
// and data_path (as the tool wrote them until then) still reads.
func TestReadsLegacyMetadata(t *testing.T) {
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	path := filepath.Join(t.TempDir(), checkpoint.Name(3))
	legacy := map[string]string{
		"format": checkpoint.Format, "step": "3", "ema_updates": "3",
		"schedule_config": `{"Kind":"scaled-linear","T":100,"BetaStart":0.00085,"BetaEnd":0.012,"CosineS":0.008,"MaxBeta":0.999,"ZeroTerminalSNR":false}`,
		"train_config":    `{"steps":3,"target":"v","ema_warmup":true}`,
		"model_config":    `{"image_size":16,"in_channels":1,"out_channels":1,"base_channels":16,"channel_mult":[1,2],"num_res_blocks":1}`,
		"data_source":     "/d/cifar/data_batch_1.bin and 4 more",
		"class_names":     `["x"]`,
	}
	if err := torch.SaveSafetensors(path, weights(t, s), legacy); err != nil {
		t.Fatal(err)
	}
	m, err := checkpoint.ReadMeta(path)
	if err != nil {
		t.Fatal(err)
	}
	wantSched := diffusion.ScheduleConfig{Kind: diffusion.ScaledLinear, T: 100, BetaStart: 0.00085, BetaEnd: 0.012, CosineS: 0.008, MaxBeta: 0.999}
	if m.Step != 3 || m.Target != diffusion.V || m.Schedule != wantSched || m.Data != "/d/cifar" ||
		m.Model == nil || m.Model.ImageSize != 16 || !reflect.DeepEqual(m.ClassNames, []string{"x"}) || m.Extra != nil {
		t.Errorf("legacy metadata read as %+v (model %+v)", m, m.Model)
	}
}

func TestNamesAndListing(t *testing.T) {
	dir := t.TempDir()
	if _, err := checkpoint.Latest(dir); !errors.Is(err, checkpoint.ErrNone) {
		t.Errorf("empty directory: %v, want ErrNone", err)
	}
	for _, step := range []int64{10, 2, 300} {
		if err := os.WriteFile(filepath.Join(dir, checkpoint.Name(step)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "ckpt-x.safetensors"), nil, 0o644)
	all, err := checkpoint.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var steps []int64
	for _, p := range all {
		steps = append(steps, checkpoint.StepOf(p))
	}
	if !reflect.DeepEqual(steps, []int64{2, 10, 300}) {
		t.Errorf("steps %v", steps)
	}
	// Pruning at step 10 (a run resumed below an unreadable step 300)
	// keeps the newest up to 10 and leaves 300 alone.
	if err := checkpoint.Prune(dir, 1, 10); err != nil {
		t.Fatal(err)
	}
	if all, _ := checkpoint.List(dir); len(all) != 2 || checkpoint.StepOf(all[0]) != 10 || checkpoint.StepOf(all[1]) != 300 {
		t.Errorf("after pruning at step 10: %v, want steps 10 and 300", all)
	}
	if err := checkpoint.Prune(dir, 1, 300); err != nil {
		t.Fatal(err)
	}
	if all, _ := checkpoint.List(dir); len(all) != 1 || checkpoint.StepOf(all[0]) != 300 {
		t.Errorf("after pruning at step 300: %v", all)
	}
	if w, err := checkpoint.ParseWeights(" Model "); err != nil || w != checkpoint.Raw {
		t.Errorf("ParseWeights: %v %v", w, err)
	}
	if _, err := checkpoint.ParseWeights("best"); err == nil || !strings.Contains(err.Error(), "ema, model") {
		t.Errorf("ParseWeights(best): %v", err)
	}
}

func TestRefusesOtherFiles(t *testing.T) {
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	path := filepath.Join(t.TempDir(), "w.safetensors")
	if err := torch.SaveSafetensors(path, weights(t, s), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.ReadMeta(path); err == nil || !strings.Contains(err.Error(), "not a ddpm checkpoint") {
		t.Errorf("plain safetensors: %v", err)
	}
	if _, err := checkpoint.ReadMeta(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing file was read")
	}
}
