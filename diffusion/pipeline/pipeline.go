// Package pipeline is the high-level way to use a trained model from Go:
// load a checkpoint (model, schedule, prediction target, class names) and
// generate images.
//
//	p, err := pipeline.Load("run/ckpt-00010000.safetensors", torch.CPU, pipeline.EMAWeights)
//	if err != nil { ... }
//	defer p.Close()
//	imgs, err := p.Generate(ctx, 16, pipeline.GenerateOptions{Seed: 1, Sample: diffusion.SampleOptions{Sampler: diffusion.SamplerDDIM, Steps: 50}})
package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// Checkpoint metadata written by the trainer's caller, next to the
// trainer's own keys (see diffusion.MetaStep and friends).
const (
	MetaModel      = "model_config" // unet.Config as JSON
	MetaClassNames = "class_names"  // JSON list of strings, one per label
	MetaData       = "data_source"  // where the training images came from
)

// Weights picks which weights of a checkpoint to use.
type Weights string

// Weight choices.
const (
	EMAWeights   Weights = "ema"   // the moving average (what sampling should use)
	ModelWeights Weights = "model" // the raw training weights
)

// Pipeline is a trained model ready to sample.
type Pipeline struct {
	Model      *unet.UNet
	Schedule   *diffusion.Schedule
	Train      diffusion.TrainConfig
	Step       int64
	ClassNames []string
	Metadata   map[string]string
	Device     torch.Device
}

// Load reads a checkpoint written by training and builds its model on dev
// with the chosen weights.
func Load(path string, dev torch.Device, w Weights) (*Pipeline, error) {
	meta, err := diffusion.ReadCheckpointMetadata(path)
	if err != nil {
		return nil, err
	}
	p := &Pipeline{Metadata: meta, Device: dev}
	var cfg unet.Config
	if err := json.Unmarshal([]byte(meta[MetaModel]), &cfg); err != nil {
		return nil, fmt.Errorf("%s: bad model configuration in metadata: %w", path, err)
	}
	var sc diffusion.ScheduleConfig
	if err := json.Unmarshal([]byte(meta[diffusion.MetaSchedule]), &sc); err != nil {
		return nil, fmt.Errorf("%s: bad schedule configuration in metadata: %w", path, err)
	}
	if err := json.Unmarshal([]byte(meta[diffusion.MetaTrain]), &p.Train); err != nil {
		return nil, fmt.Errorf("%s: bad training configuration in metadata: %w", path, err)
	}
	if names := meta[MetaClassNames]; names != "" {
		if err := json.Unmarshal([]byte(names), &p.ClassNames); err != nil {
			return nil, fmt.Errorf("%s: bad class names in metadata: %w", path, err)
		}
	}
	p.Step, _ = strconv.ParseInt(meta[diffusion.MetaStep], 10, 64)
	if p.Schedule, err = diffusion.NewSchedule(sc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if p.Model, err = unet.New(cfg, dev, torch.Float32, nil); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	prefix := "ema."
	if w == ModelWeights {
		prefix = "model."
	}
	if err := diffusion.LoadWeights(path, prefix, p.Model.Params()); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Close frees the model.
func (p *Pipeline) Close() {
	if p.Model != nil {
		p.Model.Close()
	}
}

// GenerateOptions configures Generate.
type GenerateOptions struct {
	Seed  uint64
	Batch int // images per sampler run (default 64)
	// Class is the label of every image of a class-conditional model; -1
	// samples unconditionally (the null label).
	Class int64
	// Sample are the sampler settings; Target, Labels and NullLabel are
	// filled in from the checkpoint.
	Sample diffusion.SampleOptions
	// OnBatch, if set, is told after each batch how many images are done.
	OnBatch func(done, total int)
}

// Generate samples n images and returns them as N×C×H×W values in [-1, 1].
func (p *Pipeline) Generate(ctx context.Context, n int, o GenerateOptions) ([]float32, error) {
	cfg := p.Model.Config()
	if n < 1 {
		return nil, fmt.Errorf("image count %d must be at least 1", n)
	}
	if o.Batch <= 0 {
		o.Batch = 64
	}
	conditional := cfg.NumClasses > 0
	if !conditional && (o.Class >= 0 || o.Sample.Guidance != 0) {
		if o.Class >= 0 {
			return nil, fmt.Errorf("class %d requested, but the model is unconditional (trained without labels)", o.Class)
		}
		return nil, fmt.Errorf("guidance needs a class-conditional model; this one is unconditional (train with --classes)")
	}
	if conditional && o.Class >= int64(cfg.NumClasses) {
		return nil, fmt.Errorf("class %d out of range [0, %d)", o.Class, cfg.NumClasses)
	}
	if o.Sample.Guidance != 0 && o.Class < 0 {
		return nil, fmt.Errorf("guidance needs a class (--class)")
	}
	gen, err := torch.NewGenerator(o.Seed, p.Device)
	if err != nil {
		return nil, err
	}
	defer gen.Close()
	so := o.Sample
	so.Target = p.Train.Target
	so.NullLabel = int64(cfg.NumClasses)
	shapeCHW := []int64{int64(cfg.OutChannels), int64(cfg.ImageSize), int64(cfg.ImageSize)}
	out := make([]float32, 0, n*cfg.OutChannels*cfg.ImageSize*cfg.ImageSize)
	for done := 0; done < n; {
		b := min(o.Batch, n-done)
		imgs, err := p.generateBatch(ctx, b, shapeCHW, gen, so, o.Class)
		if err != nil {
			return nil, err
		}
		out = append(out, imgs...)
		done += b
		if o.OnBatch != nil {
			o.OnBatch(done, n)
		}
	}
	return out, nil
}

func (p *Pipeline) generateBatch(ctx context.Context, b int, chw []int64, gen *torch.Generator, so diffusion.SampleOptions, class int64) ([]float32, error) {
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	if p.Model.Config().NumClasses > 0 {
		label := class
		if label < 0 {
			label = so.NullLabel
		}
		so.Labels = s.Full([]int64{int64(b)}, float64(label), torch.Int64, p.Device)
	}
	x, err := diffusion.SampleShape(ctx, p.Model, append([]int64{int64(b)}, chw...), torch.Float32, p.Schedule, gen, so)
	if err != nil {
		return nil, err
	}
	s.Adopt(x)
	if p.Device != torch.CPU {
		x = s.To(x, torch.CPU)
	}
	x = s.Clamp(x, -1, 1)
	if err := s.Err(); err != nil {
		return nil, err
	}
	return x.Float32s()
}
