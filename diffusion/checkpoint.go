package diffusion

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
	"github.com/ddpm-go/ddpm/torch/safetensors"
)

// Checkpoint files are safetensors holding the model ("model.<param>"), the
// EMA weights ("ema.<param>"), the optimizer moments ("adamw.*"), the random
// generator ("rng.state"), the loss-aware sampler's history, and, as
// metadata, the step, the configurations and whatever the caller adds.
const (
	CheckpointFormat = "ddpm-go/checkpoint/v1"

	MetaFormat     = "format"
	MetaStep       = "step"
	MetaEMAUpdates = "ema_updates"
	MetaTrain      = "train_config"
	MetaSchedule   = "schedule_config"
	MetaLossScale  = "loss_scale" // fp16: "<scale> <good steps>"
)

// CheckpointName is the file name of the checkpoint of step.
func CheckpointName(step int64) string { return fmt.Sprintf("ckpt-%08d.safetensors", step) }

// checkpointStep parses the step out of a checkpoint file name (-1 if none).
func checkpointStep(path string) int64 {
	base := filepath.Base(path)
	if !strings.HasPrefix(base, "ckpt-") || !strings.HasSuffix(base, ".safetensors") {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(base, "ckpt-"), ".safetensors"), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// Checkpoints lists the checkpoint files of dir, oldest first.
func Checkpoints(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() && checkpointStep(e.Name()) >= 0 {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	sort.Slice(out, func(i, j int) bool { return checkpointStep(out[i]) < checkpointStep(out[j]) })
	return out, nil
}

// LatestCheckpoint is the newest checkpoint of dir.
func LatestCheckpoint(dir string) (string, error) {
	all, err := Checkpoints(dir)
	if err != nil {
		return "", err
	}
	if len(all) == 0 {
		return "", fmt.Errorf("no checkpoint (ckpt-*.safetensors) in %s", dir)
	}
	return all[len(all)-1], nil
}

// SaveCheckpoint writes the complete training state to Dir atomically and
// prunes all but the newest KeepCheckpoints files. It returns the path.
func (tr *Trainer) SaveCheckpoint() (string, error) {
	if err := os.MkdirAll(tr.Dir, 0o755); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	tensors := make(map[string]*torch.Tensor)
	for _, p := range tr.params {
		tensors["model."+p.Name] = p.T
	}
	for _, p := range tr.ema.Params() {
		tensors["ema."+p.Name] = p.T
	}
	for k, v := range tr.opt.State() {
		tensors[k] = v
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	state, err := tr.gen.State()
	if err != nil {
		return "", err
	}
	tensors["rng.state"] = s.FromBytes(state, torch.Uint8, int64(len(state)))
	if tr.history != nil {
		tensors["resampler.losses"] = s.FromFloat64s(tr.history.losses, int64(len(tr.history.losses)))
		tensors["resampler.counts"] = s.FromInt64s(tr.history.counts, int64(len(tr.history.counts)))
	}
	if err := s.Err(); err != nil {
		return "", err
	}
	meta := map[string]string{}
	for k, v := range tr.Metadata {
		meta[k] = v
	}
	trainJSON, _ := json.Marshal(tr.cfg)
	schedJSON, _ := json.Marshal(tr.sched.Config())
	meta[MetaFormat] = CheckpointFormat
	meta[MetaStep] = strconv.FormatInt(tr.step, 10)
	meta[MetaEMAUpdates] = strconv.FormatInt(tr.ema.Updates(), 10)
	meta[MetaTrain] = string(trainJSON)
	meta[MetaSchedule] = string(schedJSON)
	if tr.scaler != nil {
		meta[MetaLossScale] = fmt.Sprintf("%g %d", tr.scaler.scale, tr.scaler.goodSteps)
	}
	path := filepath.Join(tr.Dir, CheckpointName(tr.step))
	if err := torch.SaveSafetensors(path, tensors, meta); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	tr.lastCheckpoint = path
	all, err := Checkpoints(tr.Dir)
	if err != nil {
		return "", err
	}
	for len(all) > tr.cfg.KeepCheckpoints {
		if err := os.Remove(all[0]); err != nil {
			return "", fmt.Errorf("pruning old checkpoints: %w", err)
		}
		all = all[1:]
	}
	return path, nil
}

// ReadCheckpointMetadata returns a checkpoint's metadata without loading any
// tensor, failing clearly on a file that is not a checkpoint of this tool.
func ReadCheckpointMetadata(path string) (map[string]string, error) {
	h, err := safetensors.ReadHeader(path)
	if err != nil {
		return nil, err
	}
	if h.Metadata[MetaFormat] != CheckpointFormat {
		return nil, fmt.Errorf("%s is a safetensors file but not a ddpm checkpoint (format %q)", path, h.Metadata[MetaFormat])
	}
	return h.Metadata, nil
}

// LoadWeights copies the weights stored under prefix ("model." or "ema.")
// of a checkpoint into params, failing (and changing nothing) when the
// checkpoint was made for another model configuration.
func LoadWeights(path, prefix string, params []nn.Param) error {
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	all, _, err := s.LoadSafetensors(path, torch.CPU)
	if err != nil {
		return err
	}
	return loadPrefixed(path, prefix, all, params)
}

func loadPrefixed(path, prefix string, all map[string]*torch.Tensor, params []nn.Param) error {
	picked := make(map[string]*torch.Tensor)
	for k, v := range all {
		if name, ok := strings.CutPrefix(k, prefix); ok {
			picked[name] = v
		}
	}
	if err := nn.LoadStateDict(params, picked); err != nil {
		return fmt.Errorf("%s (%s): %w", path, strings.TrimSuffix(prefix, "."), err)
	}
	return nil
}

// Resume restores the complete training state of a checkpoint written by
// SaveCheckpoint for the same model configuration.
func (tr *Trainer) Resume(path string) error {
	meta, err := ReadCheckpointMetadata(path)
	if err != nil {
		return err
	}
	step, err := strconv.ParseInt(meta[MetaStep], 10, 64)
	if err != nil {
		return fmt.Errorf("%s: bad step %q in metadata", path, meta[MetaStep])
	}
	emaUpdates, _ := strconv.ParseInt(meta[MetaEMAUpdates], 10, 64)
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	all, _, err := s.LoadSafetensors(path, torch.CPU)
	if err != nil {
		return err
	}
	if err := loadPrefixed(path, "model.", all, tr.params); err != nil {
		return err
	}
	if err := loadPrefixed(path, "ema.", all, tr.ema.Params()); err != nil {
		return err
	}
	if err := tr.opt.LoadState(all, step); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	rng, ok := all["rng.state"]
	if !ok {
		return fmt.Errorf("%s: no random generator state", path)
	}
	state, err := rng.Bytes()
	if err != nil {
		return err
	}
	if err := tr.gen.SetState(state); err != nil {
		return fmt.Errorf("%s: generator state: %w", path, err)
	}
	if tr.history != nil {
		if l, c := all["resampler.losses"], all["resampler.counts"]; l != nil && c != nil {
			losses, err1 := l.Float64s()
			counts, err2 := c.Int64s()
			if err1 != nil || err2 != nil || len(losses) != len(tr.history.losses) || len(counts) != len(tr.history.counts) {
				return fmt.Errorf("%s: loss-aware sampler state does not fit T=%d", path, tr.sched.T())
			}
			copy(tr.history.losses, losses)
			copy(tr.history.counts, counts)
		}
	}
	if tr.scaler != nil && meta[MetaLossScale] != "" {
		if _, err := fmt.Sscan(meta[MetaLossScale], &tr.scaler.scale, &tr.scaler.goodSteps); err != nil {
			return fmt.Errorf("%s: bad loss scale %q", path, meta[MetaLossScale])
		}
	}
	tr.ema.SetUpdates(emaUpdates)
	tr.step = step
	tr.lastCheckpoint = path
	return nil
}
