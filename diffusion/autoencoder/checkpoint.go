package autoencoder

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/ddpm-go/ddpm/diffusion/checkpoint"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
	"github.com/ddpm-go/ddpm/torch/safetensors"
)

// CheckpointFormat is the "format" metadata of an autoencoder checkpoint.
// It differs from package checkpoint's U-Net format, so each loader
// refuses the other's files by name. The file names, the tensor prefixes
// (model., ema., adamw., rng.state) and the run-directory helpers
// (checkpoint.Name, List, Latest, Prune) are the U-Net checkpoints'.
const CheckpointFormat = "ddpm-go/autoencoder-checkpoint/v1"

// Metadata keys of an autoencoder checkpoint.
const (
	keyFormat     = "format"
	keyStep       = "step"
	keyEMAUpdates = "ema_updates"
	keyModel      = "autoencoder_config"
	keyTrain      = "train_config"
	keyData       = "data_path"
)

// CheckpointMeta is what an autoencoder checkpoint says about itself.
type CheckpointMeta struct {
	Step       int64
	EMAUpdates int64 // 0 without EMA weights
	HasEMA     bool
	Model      Config
	Train      TrainConfig
	Data       string // the training data's path, "" if unknown
	RNGDevice  string // the kind of device of the noise generator's state (checkpoint.KeyRNGDevice), "" if unknown
}

// ReadCheckpointMeta reads an autoencoder checkpoint's metadata without
// loading its tensors. A U-Net checkpoint, or any other safetensors file,
// is refused naming what it is.
func ReadCheckpointMeta(path string) (CheckpointMeta, error) {
	h, err := safetensors.ReadHeader(path)
	if err != nil {
		return CheckpointMeta{}, fmt.Errorf("autoencoder: %w", err)
	}
	raw := h.Metadata
	switch raw[keyFormat] {
	case CheckpointFormat:
	case checkpoint.Format:
		return CheckpointMeta{}, fmt.Errorf("autoencoder: %s is a U-Net checkpoint (ddpm train), not an autoencoder checkpoint", path)
	default:
		return CheckpointMeta{}, fmt.Errorf("autoencoder: %s is not an autoencoder checkpoint (format %q)", path, raw[keyFormat])
	}
	bad := func(what string, err error) (CheckpointMeta, error) {
		return CheckpointMeta{}, fmt.Errorf("autoencoder: %s: bad %s in metadata: %v", path, what, err)
	}
	var m CheckpointMeta
	if m.Step, err = strconv.ParseInt(raw[keyStep], 10, 64); err != nil || m.Step < 0 {
		return bad("step", fmt.Errorf("%q", raw[keyStep]))
	}
	if m.EMAUpdates, err = strconv.ParseInt(raw[keyEMAUpdates], 10, 64); err != nil || m.EMAUpdates < 0 {
		return bad("EMA update count", fmt.Errorf("%q", raw[keyEMAUpdates]))
	}
	if err := json.Unmarshal([]byte(raw[keyModel]), &m.Model); err != nil {
		return bad("autoencoder configuration", err)
	}
	if err := m.Model.Validate(); err != nil {
		return bad("autoencoder configuration", err)
	}
	if err := json.Unmarshal([]byte(raw[keyTrain]), &m.Train); err != nil {
		return bad("training configuration", err)
	}
	m.Data = raw[keyData]
	m.RNGDevice = raw[checkpoint.KeyRNGDevice]
	for _, e := range h.Entries {
		if strings.HasPrefix(e.Name, checkpoint.EMAPrefix) {
			m.HasEMA = true
			break
		}
	}
	return m, nil
}

// Save writes the complete training state to path, atomically: the
// weights, the EMA weights, AdamW's moments, the generator's state, and
// the configurations as metadata.
func (t *Trainer) Save(path string) error {
	tensors := make(map[string]*torch.Tensor)
	for _, p := range t.model.params {
		tensors[checkpoint.ModelPrefix+p.Name] = p.T
	}
	for _, p := range t.EMA() {
		tensors[checkpoint.EMAPrefix+p.Name] = p.T
	}
	for k, v := range t.opt.State() {
		tensors[k] = v
	}
	state, err := t.gen.State()
	if err != nil {
		return fmt.Errorf("autoencoder: checkpoint: %w", err)
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	tensors[checkpoint.RNGState] = s.FromBytes(state, torch.Uint8, int64(len(state)))
	if err := s.Err(); err != nil {
		return fmt.Errorf("autoencoder: checkpoint: %w", err)
	}
	model, err := json.Marshal(t.model.cfg)
	if err != nil {
		return fmt.Errorf("autoencoder: checkpoint: %w", err)
	}
	train, err := json.Marshal(t.cfg)
	if err != nil {
		return fmt.Errorf("autoencoder: checkpoint: %w", err)
	}
	var updates int64
	if t.ema != nil {
		updates = t.ema.Updates()
	}
	meta := map[string]string{
		keyFormat: CheckpointFormat, keyStep: strconv.FormatInt(t.step, 10),
		keyEMAUpdates: strconv.FormatInt(updates, 10), keyModel: string(model), keyTrain: string(train),
		checkpoint.KeyRNGDevice: checkpoint.DeviceKind(t.model.dev),
	}
	if t.data != "" {
		meta[keyData] = t.data
	}
	if err := torch.SaveSafetensors(path, tensors, meta); err != nil {
		return fmt.Errorf("autoencoder: %w", err)
	}
	return nil
}

// Resume restores the training state of a checkpoint that Save wrote for
// the same model and training configuration (the number of steps may
// differ). Everything is checked before anything changes: on error the
// trainer is as it was.
func (t *Trainer) Resume(path string) error {
	if t.step != 0 {
		return fmt.Errorf("autoencoder: Resume needs a trainer that has not stepped yet (this one is at step %d)", t.step)
	}
	meta, err := ReadCheckpointMeta(path)
	if err != nil {
		return err
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("autoencoder: cannot resume from %s: %s", path, fmt.Sprintf(format, args...))
	}
	if !reflect.DeepEqual(meta.Model, t.model.cfg) {
		return fail("it holds another autoencoder configuration")
	}
	stored, mine := meta.Train, t.cfg
	stored.Steps, mine.Steps = 0, 0
	if !reflect.DeepEqual(stored, mine) {
		return fail("it was trained with another configuration (%+v, not %+v)", meta.Train, t.cfg)
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	all, _, err := s.LoadSafetensors(path, torch.CPU)
	if err != nil {
		return fmt.Errorf("autoencoder: %w", err)
	}
	parts := []struct {
		what   string
		params []nn.Param
		src    map[string]*torch.Tensor
	}{
		{"model", t.model.params, checkpoint.Part(all, checkpoint.ModelPrefix, false)},
		{"optimizer state", t.opt.Buffers(), checkpoint.Part(all, checkpoint.OptimizerPrefix, true)},
	}
	if t.ema != nil {
		parts = append(parts, struct {
			what   string
			params []nn.Param
			src    map[string]*torch.Tensor
		}{"ema", t.ema.Params(), checkpoint.Part(all, checkpoint.EMAPrefix, false)})
	}
	for _, p := range parts {
		if err := nn.CheckStateDict(p.params, p.src); err != nil {
			return fail("%s: %v", p.what, err)
		}
	}
	rng, ok := all[checkpoint.RNGState]
	if !ok {
		return fail("no random generator state")
	}
	state, err := rng.Bytes()
	if err != nil {
		return fail("generator state: %v", err)
	}
	gen, reseeded, err := checkpoint.Generator(state, meta.RNGDevice, t.model.dev, t.cfg.Seed, meta.Step)
	if err != nil {
		return fail("%v", err)
	}
	for _, p := range parts {
		if err := nn.LoadStateDict(p.params, p.src); err != nil {
			gen.Close()
			return fail("%s: %v", p.what, err)
		}
	}
	t.gen.Close()
	t.gen, t.Reseeded = gen, reseeded
	t.opt.SetSteps(meta.Step)
	if t.ema != nil {
		t.ema.SetUpdates(meta.EMAUpdates)
	}
	t.loader.Skip(int(meta.Step)) // one batch per step
	t.step = meta.Step
	return nil
}

// LoadCheckpoint builds the autoencoder of a checkpoint on dev and loads
// its weights w (EMA or the raw training weights).
func LoadCheckpoint(path string, w checkpoint.Weights, dev torch.Device) (*Model, CheckpointMeta, error) {
	meta, err := ReadCheckpointMeta(path)
	if err != nil {
		return nil, CheckpointMeta{}, err
	}
	if w != checkpoint.Raw && !meta.HasEMA {
		return nil, CheckpointMeta{}, fmt.Errorf("autoencoder: %s holds no EMA weights (trained without EMA); load its model weights", path)
	}
	m, err := New(meta.Model, dev, torch.Float32, nil)
	if err != nil {
		return nil, CheckpointMeta{}, err
	}
	if err := checkpoint.LoadWeights(path, w, m.Params()); err != nil {
		m.Close()
		return nil, CheckpointMeta{}, fmt.Errorf("autoencoder: %w", err)
	}
	return m, meta, nil
}
