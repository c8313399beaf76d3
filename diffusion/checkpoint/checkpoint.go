// Package checkpoint is the one owner of the checkpoint format: file names,
// listing, every metadata key and the tensor prefixes. A checkpoint
// describes itself whoever wrote it: the model configuration, the schedule,
// the prediction target and the class names travel with the weights, so a
// checkpoint written by package train alone is enough to sample
// (pipeline.Load).
//
// A checkpoint is one safetensors file holding the model ("model.<param>"),
// the EMA weights ("ema.<param>"), the optimizer moments ("adamw.*"), the
// random generator ("rng.state") and the loss-aware sampler's history
// ("resampler.*"), with Meta as string metadata. Files are written
// atomically (a temporary file renamed into place), readable by everyone
// (mode 0644).
package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/internal/enum"
	"github.com/ddpm-go/ddpm/torch"
	"github.com/ddpm-go/ddpm/torch/safetensors"
)

// Format is the value of the "format" metadata key.
const Format = "ddpm-go/checkpoint/v1"

// Metadata keys. Values are strings; configurations are JSON with
// snake_case keys.
const (
	keyFormat     = "format"
	keyStep       = "step"
	keyEMAUpdates = "ema_updates"
	keyTrain      = "train_config"
	keySchedule   = "schedule_config"
	keyTarget     = "prediction_type"
	keyModel      = "model_config"
	keyClassNames = "class_names"
	keyData       = "data_path"
	keyDataLegacy = "data_source" // display text written before data_path
	keyLossScale  = "loss_scale"
	keyLatent     = "autoencoder"
)

var ownKeys = []string{keyFormat, keyStep, keyEMAUpdates, keyTrain, keySchedule, keyTarget, keyModel,
	keyClassNames, keyData, keyDataLegacy, keyLossScale, keyLatent}

// Tensor names and prefixes.
const (
	ModelPrefix     = "model."
	EMAPrefix       = "ema."
	OptimizerPrefix = "adamw." // AdamW's buffers, stored under their own full names (optim.AdamW.Buffers)
	RNGState        = "rng.state"
	ResamplerLosses = "resampler.losses"
	ResamplerCounts = "resampler.counts"
)

// Part returns the tensors of all whose names start with prefix: under
// their names without it (the model's and EMA's parameter names), or with
// whole set under their full names (the optimizer's buffers).
func Part(all map[string]*torch.Tensor, prefix string, whole bool) map[string]*torch.Tensor {
	out := map[string]*torch.Tensor{}
	for k, v := range all {
		if name, ok := strings.CutPrefix(k, prefix); ok {
			if whole {
				name = k
			}
			out[name] = v
		}
	}
	return out
}

// Meta is what a checkpoint says about itself.
type Meta struct {
	// Step is the number of optimizer steps taken.
	Step int64
	// EMAUpdates is the number of EMA updates (its warm-up depends on it).
	EMAUpdates int64
	// Schedule is the noise schedule the model was trained with.
	Schedule diffusion.ScheduleConfig
	// Target is what the model predicts.
	Target diffusion.Target
	// Model is the U-Net's configuration; nil when the model was not a U-Net
	// (such a checkpoint can be resumed, not sampled by the pipeline).
	Model *unet.Config
	// ClassNames name the labels of a class-conditional model, if known.
	ClassNames []string
	// Data is the path the training data was opened from (data.Open reads
	// it again), "" if unknown.
	Data string
	// Train is the trainer's configuration as JSON; package train writes
	// and reads it.
	Train json.RawMessage
	// LossScale is the fp16 loss scaler's state, "" without one.
	LossScale string
	// Autoencoder is the autoencoder whose latents a latent diffusion
	// model was trained on, nil for a model of pixels.
	Autoencoder *Autoencoder
	// Extra holds any other metadata, kept as it is.
	Extra map[string]string
}

// Name is the file name of the checkpoint of step.
func Name(step int64) string { return fmt.Sprintf("ckpt-%08d.safetensors", step) }

// StepOf parses the step out of a checkpoint file name, -1 if path is not
// named like a checkpoint.
func StepOf(path string) int64 {
	base := filepath.Base(path)
	if !strings.HasPrefix(base, "ckpt-") || !strings.HasSuffix(base, ".safetensors") {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(base, "ckpt-"), ".safetensors"), 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// List returns the checkpoint files of dir, oldest first.
func List(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() && StepOf(e.Name()) >= 0 {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	sort.Slice(out, func(i, j int) bool { return StepOf(out[i]) < StepOf(out[j]) })
	return out, nil
}

// ErrNone is returned by Latest for a directory without checkpoints.
var ErrNone = errors.New("no checkpoint (ckpt-*.safetensors)")

// Latest returns the newest checkpoint of dir.
func Latest(dir string) (string, error) {
	all, err := List(dir)
	if err != nil {
		return "", err
	}
	if len(all) == 0 {
		return "", fmt.Errorf("checkpoint: %w in %s", ErrNone, dir)
	}
	return all[len(all)-1], nil
}

// Prune removes all but the newest keep checkpoints of dir up to step (the
// step of the one just written). Checkpoints of later steps are neither
// removed nor counted: they are ones a resume could not load and fell back
// from, and pruning by step number alone would remove the checkpoint just
// written and keep them (the run overwrites them when it gets there).
func Prune(dir string, keep int, step int64) error {
	listed, err := List(dir)
	if err != nil {
		return err
	}
	var all []string
	for _, p := range listed {
		if StepOf(p) <= step {
			all = append(all, p)
		}
	}
	for len(all) > keep {
		if err := os.Remove(all[0]); err != nil {
			return fmt.Errorf("checkpoint: pruning old checkpoints: %w", err)
		}
		all = all[1:]
	}
	return nil
}

// Write saves tensors with m as metadata to path, atomically.
func Write(path string, tensors map[string]*torch.Tensor, m Meta) error {
	meta, err := m.encode()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if err := torch.SaveSafetensors(path, tensors, meta); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// WriteWeights writes the weights w of the checkpoint at src, stored as
// dtype, with src's metadata, to dst: a file to sample from (pipeline.Load
// reads it like a training checkpoint), without the other weights, the
// optimizer's moments or the generator's state that resuming needs, so a
// quarter of the size in float32 and an eighth in bf16 or fp16. Loading
// casts the weights back to float32.
func WriteWeights(src, dst string, w Weights, dtype torch.DType) error {
	if !dtype.IsFloat() || dtype == torch.Float64 {
		return fmt.Errorf("checkpoint: weights are stored as float32, bfloat16 or float16, not %s", dtype)
	}
	meta, err := ReadMeta(src)
	if err != nil {
		return err
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	all, _, err := s.LoadSafetensors(src, torch.CPU)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	out := make(map[string]*torch.Tensor)
	for k, v := range all {
		if strings.HasPrefix(k, w.Prefix()) {
			out[k] = s.ToDType(v, dtype)
		}
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if len(out) == 0 {
		return fmt.Errorf("checkpoint: %s holds no weights under %q", src, w.Prefix())
	}
	return Write(dst, out, meta)
}

func (m Meta) encode() (map[string]string, error) {
	out := make(map[string]string, len(m.Extra)+len(ownKeys))
	for k, v := range m.Extra {
		out[k] = v
	}
	sched, err := json.Marshal(m.Schedule)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: schedule configuration: %w", err)
	}
	target := m.Target
	if target == "" {
		target = diffusion.Epsilon
	}
	out[keyFormat] = Format
	out[keyStep] = strconv.FormatInt(m.Step, 10)
	out[keyEMAUpdates] = strconv.FormatInt(m.EMAUpdates, 10)
	out[keySchedule] = string(sched)
	out[keyTarget] = string(target)
	if m.Model != nil {
		b, err := json.Marshal(m.Model)
		if err != nil {
			return nil, fmt.Errorf("checkpoint: model configuration: %w", err)
		}
		out[keyModel] = string(b)
	}
	if len(m.ClassNames) > 0 {
		b, _ := json.Marshal(m.ClassNames)
		out[keyClassNames] = string(b)
	}
	if m.Data != "" {
		out[keyData] = m.Data
	}
	if len(m.Train) > 0 {
		out[keyTrain] = string(m.Train)
	}
	if m.LossScale != "" {
		out[keyLossScale] = m.LossScale
	}
	if m.Autoencoder != nil {
		if err := m.Autoencoder.Validate(); err != nil {
			return nil, err
		}
		b, _ := json.Marshal(m.Autoencoder)
		out[keyLatent] = string(b)
	}
	return out, nil
}

// FormatOf is the "format" metadata of a safetensors file: Format for a
// U-Net checkpoint, another value for the other checkpoints of the
// project (the autoencoder's), "" for a file without one.
func FormatOf(path string) (string, error) {
	h, err := safetensors.ReadHeader(path)
	if err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	return h.Metadata[keyFormat], nil
}

// ReadMeta reads a checkpoint's metadata without loading any tensor. It
// fails clearly on a file that is not a checkpoint of this tool. Checkpoints
// written before the prediction_type and data_path keys existed are read
// too (the target then comes from the training configuration).
func ReadMeta(path string) (Meta, error) {
	h, err := safetensors.ReadHeader(path)
	if err != nil {
		return Meta{}, fmt.Errorf("checkpoint: %w", err)
	}
	raw := h.Metadata
	if raw[keyFormat] != Format {
		return Meta{}, fmt.Errorf("checkpoint: %s is a safetensors file but not a ddpm checkpoint (format %q)", path, raw[keyFormat])
	}
	bad := func(what string, err error) (Meta, error) {
		return Meta{}, fmt.Errorf("checkpoint: %s: bad %s in metadata: %w", path, what, err)
	}
	var m Meta
	if m.Step, err = strconv.ParseInt(raw[keyStep], 10, 64); err != nil || m.Step < 0 {
		return bad("step", fmt.Errorf("%q", raw[keyStep]))
	}
	if v := raw[keyEMAUpdates]; v != "" {
		if m.EMAUpdates, err = strconv.ParseInt(v, 10, 64); err != nil {
			return bad("EMA update count", err)
		}
	}
	if err := json.Unmarshal([]byte(raw[keySchedule]), &m.Schedule); err != nil {
		return bad("schedule configuration", err)
	}
	if v := raw[keyTrain]; v != "" {
		if !json.Valid([]byte(v)) {
			return bad("training configuration", errors.New("not JSON"))
		}
		m.Train = json.RawMessage(v)
	}
	target := raw[keyTarget]
	if target == "" && len(m.Train) > 0 {
		var legacy struct {
			Target string `json:"target"`
		}
		if err := json.Unmarshal(m.Train, &legacy); err != nil {
			return bad("training configuration", err)
		}
		target = legacy.Target
	}
	if target == "" {
		m.Target = diffusion.Epsilon
	} else if m.Target, err = diffusion.ParseTarget(target); err != nil {
		return bad("prediction type", err)
	}
	if v := raw[keyModel]; v != "" {
		m.Model = new(unet.Config)
		if err := json.Unmarshal([]byte(v), m.Model); err != nil {
			return bad("model configuration", err)
		}
	}
	if v := raw[keyClassNames]; v != "" {
		if err := json.Unmarshal([]byte(v), &m.ClassNames); err != nil {
			return bad("class names", err)
		}
	}
	m.Data = raw[keyData]
	if m.Data == "" {
		m.Data = legacyDataPath(raw[keyDataLegacy])
	}
	m.LossScale = raw[keyLossScale]
	if v := raw[keyLatent]; v != "" {
		m.Autoencoder = new(Autoencoder)
		if err := json.Unmarshal([]byte(v), m.Autoencoder); err != nil {
			return bad("autoencoder", err)
		}
		if err := m.Autoencoder.Validate(); err != nil {
			return bad("autoencoder", err)
		}
	}
	for k, v := range raw {
		if !enum.Valid(k, ownKeys) {
			if m.Extra == nil {
				m.Extra = map[string]string{}
			}
			m.Extra[k] = v
		}
	}
	return m, nil
}

// legacyDataPath turns the display text older checkpoints stored as their
// data source ("FILE", or "FILE and N more" for a CIFAR-10 folder) into the
// path it was opened from: the file, or the folder holding the files.
func legacyDataPath(source string) string {
	if source == "" {
		return ""
	}
	if i := strings.LastIndex(source, " and "); i > 0 && strings.HasSuffix(source, " more") {
		return filepath.Dir(source[:i])
	}
	return source
}

// Weights picks which weights of a checkpoint to load.
type Weights string

const (
	// EMA is the moving average of the weights, what sampling should use.
	EMA Weights = "ema"
	// Raw is the training weights themselves.
	Raw Weights = "model"
)

var weightKinds = []Weights{EMA, Raw}

// ParseWeights parses "ema" or "model" (also "raw") the enum way.
func ParseWeights(s string) (Weights, error) {
	w, err := enum.Parse("weights", s, weightKinds, map[string]Weights{"raw": Raw})
	if err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	return w, nil
}

// Prefix is the tensor-name prefix of w; the zero value means EMA.
func (w Weights) Prefix() string {
	if w == Raw {
		return ModelPrefix
	}
	return EMAPrefix
}

// LoadWeights copies the weights w of the checkpoint at path into params,
// failing, and changing nothing, when the checkpoint was made for another
// model configuration.
func LoadWeights(path string, w Weights, params []nn.Param) error {
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	all, _, err := s.LoadSafetensors(path, torch.CPU)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return LoadPrefixed(path, w.Prefix(), all, params)
}

// LoadPrefixed copies the tensors of all named prefix+<param> into params,
// checking every name and shape first, so that a mismatch changes nothing.
func LoadPrefixed(path, prefix string, all map[string]*torch.Tensor, params []nn.Param) error {
	picked := make(map[string]*torch.Tensor)
	for k, v := range all {
		if name, ok := strings.CutPrefix(k, prefix); ok {
			picked[name] = v
		}
	}
	if err := nn.LoadStateDict(params, picked); err != nil {
		return fmt.Errorf("checkpoint: %s (%s): %w", path, strings.TrimSuffix(prefix, "."), err)
	}
	return nil
}

// CheckModel compares the U-Net configuration of a checkpoint's metadata
// with the tensors the file stores for weights w, from the header alone, so
// that metadata claiming a larger model than the file holds fails before
// anything is built (a few megabytes of file must not allocate gigabytes).
func CheckModel(path string, w Weights, cfg unet.Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("checkpoint: %s: model_config: %w", path, err)
	}
	h, err := safetensors.ReadHeader(path)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	var stored int64
	for _, e := range h.Entries {
		if strings.HasPrefix(e.Name, w.Prefix()) {
			n := int64(1)
			for _, d := range e.Shape {
				n *= d
			}
			stored += n
		}
	}
	if stored == 0 {
		return fmt.Errorf("checkpoint: %s stores no weights under %q (a weights file written by ddpm export holds one kind: try the other --weights)", path, w.Prefix())
	}
	if want := cfg.NumParams(); want != stored {
		return fmt.Errorf("checkpoint: %s: model_config describes %d parameters, but the file stores %d under %q: the metadata does not match the weights",
			path, want, stored, w.Prefix())
	}
	return nil
}
