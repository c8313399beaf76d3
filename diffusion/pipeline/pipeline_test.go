package pipeline_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
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

// checkpoint trains a tiny model for two steps and returns its checkpoint.
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
	tc := diffusion.TrainConfig{Steps: 2, BatchSize: 4, NumClasses: classes, Target: diffusion.V}
	tr, err := diffusion.NewTrainer(model, sched, tc, torch.CPU, []int64{1, 16, 16})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	tr.Dir = t.TempDir()
	mc, _ := json.Marshal(model.Config())
	tr.Metadata = map[string]string{pipeline.MetaModel: string(mc), pipeline.MetaClassNames: `["a","b"]`}
	if err := tr.Run(context.Background(), noise{per: 256}); err != nil {
		t.Fatal(err)
	}
	return tr.LastCheckpoint()
}

func TestLoadAndGenerate(t *testing.T) {
	path := checkpoint(t, 2)
	p, err := pipeline.Load(path, torch.CPU, pipeline.EMAWeights)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Step != 2 || p.Schedule.T() != 100 || p.Train.Target != diffusion.V || !reflect.DeepEqual(p.ClassNames, []string{"a", "b"}) {
		t.Fatalf("loaded step %d, T %d, target %s, classes %v", p.Step, p.Schedule.T(), p.Train.Target, p.ClassNames)
	}
	o := pipeline.GenerateOptions{Seed: 5, Batch: 2, Class: 1,
		Sample: diffusion.SampleOptions{Sampler: diffusion.SamplerDDIM, Steps: 4, Guidance: 2}}
	a, err := p.Generate(context.Background(), 3, o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Generate(context.Background(), 3, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 3*256 || !reflect.DeepEqual(a, b) {
		t.Fatalf("%d values; same seed gives the same images: %v", len(a), reflect.DeepEqual(a, b))
	}
	for _, v := range a {
		if v < -1 || v > 1 {
			t.Fatalf("value %g outside [-1, 1]", v)
		}
	}
	for _, c := range []struct {
		o    pipeline.GenerateOptions
		want string
	}{
		{pipeline.GenerateOptions{Class: 2}, "out of range"},
		{pipeline.GenerateOptions{Class: -1, Sample: diffusion.SampleOptions{Guidance: 3}}, "needs a class"},
	} {
		if _, err := p.Generate(context.Background(), 1, c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Generate(%+v) = %v, want %q", c.o, err, c.want)
		}
	}
}

func TestUnconditionalRejectsClasses(t *testing.T) {
	p, err := pipeline.Load(checkpoint(t, 0), torch.CPU, pipeline.ModelWeights)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Generate(context.Background(), 1, pipeline.GenerateOptions{Class: 0}); err == nil || !strings.Contains(err.Error(), "unconditional") {
		t.Errorf("class on an unconditional model: %v", err)
	}
}
