package pipeline_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	ckpt "github.com/ddpm-go/ddpm/diffusion/checkpoint"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/diffusers"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/diffusion/sampler"
	"github.com/ddpm-go/ddpm/diffusion/train"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

type noise struct{ per int }

func (n noise) Next(context.Context) (data.Batch, error) {
	img := make([]float32, 4*n.per)
	for i := range img {
		img[i] = rand.Float32()*2 - 1
	}
	return data.Batch{Images: img, Labels: []int64{0, 1, 0, 1}, N: 4}, nil
}
func (noise) Skip(int) {}

// checkpoint trains a tiny model for two steps with package train alone
// (nothing added to the checkpoint by hand) and returns its checkpoint.
func checkpoint(t *testing.T, classes int) string {
	t.Helper()
	cfg, _ := unet.Preset("tiny")
	cfg.NumClasses = classes
	model, err := unet.New(cfg, torch.CPU, torch.Float32, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close()
	sched, _ := diffusion.NewSchedule(diffusion.ScheduleConfig{T: 100})
	tc := train.Config{Steps: 2, BatchSize: 4, NumClasses: classes, Target: diffusion.V}
	tr, err := train.New(model, sched, tc, torch.CPU, []int64{1, 16, 16})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	tr.Dir = t.TempDir()
	if classes > 0 {
		tr.ClassNames = []string{"a", "b"}
	}
	if err := tr.Run(context.Background(), noise{per: 256}); err != nil {
		t.Fatal(err)
	}
	return tr.LastCheckpoint()
}

func TestLoadAndGenerate(t *testing.T) {
	p, err := pipeline.Load(checkpoint(t, 2), pipeline.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	info := p.Info()
	if info.Step != 2 || p.Schedule().T() != 100 || info.Target != diffusion.V || !reflect.DeepEqual(info.ClassNames, []string{"a", "b"}) ||
		info.Channels != 1 || info.Size != 16 || info.NumClasses != 2 {
		t.Fatalf("loaded %+v, T %d", info, p.Schedule().T())
	}
	cfg, _ := unet.Preset("tiny")
	cfg.NumClasses = 2
	if info.ForwardFLOPs != cfg.FLOPs() || info.ForwardFLOPs <= 0 {
		t.Errorf("ForwardFLOPs %d, want the U-Net's %d", info.ForwardFLOPs, cfg.FLOPs())
	}
	o := pipeline.GenerateOptions{Seed: 5, Batch: 2, Labels: []int64{1, pipeline.Unconditional, 0},
		Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 4, Guidance: 2}}
	a, err := p.Generate(context.Background(), 3, o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Generate(context.Background(), 3, o)
	if err != nil {
		t.Fatal(err)
	}
	if a.N != 3 || a.C != 1 || a.H != 16 || a.W != 16 || len(a.Pixels) != 3*256 || !reflect.DeepEqual(a, b) {
		t.Fatalf("%d×%d×%d×%d, %d values; same seed gives the same images: %v", a.N, a.C, a.H, a.W, len(a.Pixels), reflect.DeepEqual(a, b))
	}
	if !reflect.DeepEqual(a.Labels, []int64{1, -1, 0}) {
		t.Errorf("labels %v", a.Labels)
	}
	for _, v := range a.Pixels {
		if v < -1 || v > 1 {
			t.Fatalf("value %g outside [-1, 1]", v)
		}
	}
	if got := a.Image(2).Bounds(); got.Dx() != 16 || got.Dy() != 16 {
		t.Errorf("image bounds %v", got)
	}
	for _, c := range []struct {
		o    pipeline.GenerateOptions
		want string
	}{
		{pipeline.GenerateOptions{Labels: []int64{2}}, "out of range"},
		{pipeline.GenerateOptions{Labels: []int64{0, 1}}, "2 labels for 1 images"},
		{pipeline.GenerateOptions{Sampling: sampler.Options{Sampler: sampler.DDIM, Guidance: 3}}, "needs labels"},
	} {
		if _, err := p.Generate(context.Background(), 1, c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Generate(%+v) = %v, want %q", c.o, err, c.want)
		}
	}
}

// The zero GenerateOptions work on an unconditional model, and labels are
// refused there.
func TestUnconditionalZeroOptions(t *testing.T) {
	p, err := pipeline.Load(checkpoint(t, 0), pipeline.Options{Weights: "model"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	imgs, err := p.Generate(context.Background(), 2, pipeline.GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if imgs.N != 2 || imgs.Labels != nil {
		t.Errorf("%d images, labels %v", imgs.N, imgs.Labels)
	}
	if _, err := p.Generate(context.Background(), 1, pipeline.GenerateOptions{Labels: []int64{0}}); err == nil || !strings.Contains(err.Error(), "unconditional") {
		t.Errorf("labels on an unconditional model: %v", err)
	}
}

// Many goroutines share one pipeline: each gets the images it would get
// alone, no more than MaxConcurrent run at once, and a caller whose context
// ends while it waits gets its error. Run under -race by ./build.sh test.
func TestConcurrentGenerate(t *testing.T) {
	path := checkpoint(t, 0)
	p, err := pipeline.Load(path, pipeline.Options{MaxConcurrent: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	o := func(seed uint64) pipeline.GenerateOptions {
		return pipeline.GenerateOptions{Seed: seed, Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 3}}
	}
	want := map[uint64]*pipeline.Images{}
	for seed := range uint64(3) {
		if want[seed], err = p.Generate(context.Background(), 2, o(seed)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	running, peak := 0, 0
	var wg sync.WaitGroup
	errs := make(chan error, 9)
	for i := range 9 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seed := uint64(i % 3)
			oo := o(seed)
			oo.OnBatch = func(int, int) {
				mu.Lock()
				running++
				peak = max(peak, running)
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
				mu.Lock()
				running--
				mu.Unlock()
			}
			got, err := p.Generate(context.Background(), 2, oo)
			if err != nil {
				errs <- err
				return
			}
			if !reflect.DeepEqual(got.Pixels, want[seed].Pixels) {
				errs <- errors.New("concurrent call gave other pixels than the same call alone")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if peak > 2 {
		t.Errorf("%d calls ran at once, limit 2", peak)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Generate(ctx, 1, o(0)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

// A checkpoint exported as a diffusers folder and read back samples the
// same 64-image grid as the checkpoint itself, for the same sampler and seed.
func TestDiffusersFolderMatchesCheckpoint(t *testing.T) {
	ckpt := checkpoint(t, 2)
	dir := filepath.Join(t.TempDir(), "exported")
	if err := diffusers.Export(ckpt, dir, "", nil); err != nil {
		t.Fatal(err)
	}
	a, err := pipeline.Load(ckpt, pipeline.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := pipeline.LoadDiffusers(dir, pipeline.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if ia, ib := a.Info(), b.Info(); ia.Target != ib.Target || ia.NumClasses != ib.NumClasses || ib.NoNullLabel ||
		a.Schedule().Config() != b.Schedule().Config() {
		t.Fatalf("checkpoint %+v %+v, folder %+v %+v", ia, a.Schedule().Config(), ib, b.Schedule().Config())
	}
	if got := b.DefaultSampling(); got.Sampler != sampler.DDPM || got.Clip != sampler.ClipStatic {
		t.Errorf("folder's default sampling %+v, want its DDPMScheduler with clipping", got)
	}
	o := pipeline.GenerateOptions{Seed: 3, Labels: pipeline.CycleLabels(64, 2),
		Sampling: sampler.Options{Sampler: sampler.DDIM, Steps: 5, Clip: sampler.ClipStatic, Guidance: 1.5}}
	x, err := a.Generate(context.Background(), 64, o)
	if err != nil {
		t.Fatal(err)
	}
	y, err := b.Generate(context.Background(), 64, o)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(x.Pixels, y.Pixels) {
		t.Error("the exported folder samples other pixels than its checkpoint")
	}
}

// A checkpoint whose metadata claims a model larger than its tensors fails
// before anything is built; NaN weights are refused at load.
func TestLoadRefusesBrokenCheckpoints(t *testing.T) {
	path := checkpoint(t, 0)
	meta, err := ckpt.ReadMeta(path)
	if err != nil {
		t.Fatal(err)
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	all, _, err := s.LoadSafetensors(path, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	big := *meta.Model
	big.BaseChannels = 2048
	lying := meta
	lying.Model = &big
	bad := filepath.Join(t.TempDir(), ckpt.Name(2))
	if err := ckpt.Write(bad, all, lying); err != nil {
		t.Fatal(err)
	}
	if _, err := pipeline.Load(bad, pipeline.Options{}); err == nil || !strings.Contains(err.Error(), "does not match the weights") {
		t.Errorf("metadata claiming a bigger model: %v", err)
	}
	for k, v := range all {
		if strings.HasPrefix(k, "ema.") {
			all[k] = s.MulScalar(v, math.NaN())
		}
	}
	nan := filepath.Join(t.TempDir(), ckpt.Name(2))
	if err := ckpt.Write(nan, all, meta); err != nil {
		t.Fatal(err)
	}
	if _, err := pipeline.Load(nan, pipeline.Options{}); err == nil || !strings.Contains(err.Error(), "not finite") {
		t.Errorf("NaN weights: %v", err)
	}
}
