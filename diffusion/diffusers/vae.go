package diffusers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ddpm-go/ddpm/diffusion/autoencoder"
	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
)

// AutoencoderClass is the _class_name of the autoencoders read here.
const AutoencoderClass = "AutoencoderKL"

// autoencoderFile is an AutoencoderKL config.json: the class and version
// keys, then the configuration's fields (diffusers' names).
type autoencoderFile struct {
	ClassName        string `json:"_class_name"`
	DiffusersVersion string `json:"_diffusers_version,omitempty"`
	autoencoder.Config
}

// nullable are the AutoencoderKL config keys whose null is a value.
var nullable = []string{"shift_factor", "latents_mean", "latents_std"}

// ReadAutoencoderConfig reads an AutoencoderKL config.json (see
// ParseAutoencoderConfig).
func ReadAutoencoderConfig(path string) (autoencoder.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return autoencoder.Config{}, fmt.Errorf("diffusers: %w", err)
	}
	c, err := ParseAutoencoderConfig(b)
	if err != nil {
		return autoencoder.Config{}, fmt.Errorf("%w (in %s)", err, path)
	}
	return c, nil
}

// ParseAutoencoderConfig parses the bytes of an AutoencoderKL config.json:
// fields left out take diffusers' constructor defaults, keys it does not
// know are ignored (as diffusers ignores them, e.g. _name_or_path), a
// value of the wrong type or null where diffusers needs a value is an
// error naming the key, and the result is validated.
func ParseAutoencoderConfig(b []byte) (autoencoder.Config, error) {
	fail := func(format string, args ...any) (autoencoder.Config, error) {
		return autoencoder.Config{}, fmt.Errorf("diffusers: AutoencoderKL config: "+format, args...)
	}
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
		return fail("not a JSON object")
	}
	var keys map[string]json.RawMessage
	if err := strictJSON(b, &keys); err != nil {
		return fail("%v", err)
	}
	for k, v := range keys {
		if !autoencoderKeys[k] {
			// encoding/json matches keys regardless of case; diffusers
			// would ignore such a key, so it must not set the field.
			for known := range autoencoderKeys {
				if strings.EqualFold(k, known) {
					return fail("key %q is not %q (keys are case-sensitive)", k, known)
				}
			}
			continue
		}
		if bytes.Equal(v, []byte("null")) && !slices.Contains(nullable, k) {
			return fail("%s is null; it needs a value", k)
		}
	}
	f := autoencoderFile{Config: autoencoder.DefaultConfig()}
	if err := json.Unmarshal(b, &f); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fail("%s: a JSON %s where %s is needed", strings.TrimPrefix(te.Field, "Config."), te.Value, te.Type)
		}
		return fail("%v", err)
	}
	if f.ClassName != AutoencoderClass {
		return autoencoder.Config{}, fmt.Errorf("diffusers: _class_name %q is not an %s", f.ClassName, AutoencoderClass)
	}
	if err := f.Config.Validate(); err != nil {
		return autoencoder.Config{}, fmt.Errorf("diffusers: %w", err)
	}
	return f.Config, nil
}

// strictJSON decodes exactly one JSON value from b into v.
func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	return nil
}

// autoencoderKeys are the keys of autoencoderFile.
var autoencoderKeys = func() map[string]bool {
	b, _ := json.Marshal(autoencoderFile{})
	var m map[string]json.RawMessage
	json.Unmarshal(b, &m)
	keys := map[string]bool{"_diffusers_version": true}
	for k := range m {
		keys[k] = true
	}
	return keys
}()

// AutoencoderDir finds the AutoencoderKL of a folder: its vae/ subfolder
// (a pipeline folder), or the folder itself when it holds config.json.
func AutoencoderDir(dir string) (string, error) {
	for _, d := range []string{filepath.Join(dir, "vae"), dir} {
		if _, err := os.Stat(filepath.Join(d, "config.json")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("diffusers: %s has no vae/config.json or config.json of an %s", dir, AutoencoderClass)
}

// LoadAutoencoder builds the AutoencoderKL of a folder (see
// AutoencoderDir) on dev in float32 and loads its weights.
func LoadAutoencoder(dir string, dev torch.Device) (*autoencoder.Model, error) {
	ad, err := AutoencoderDir(dir)
	if err != nil {
		return nil, err
	}
	cfg, err := ReadAutoencoderConfig(filepath.Join(ad, "config.json"))
	if err != nil {
		return nil, err
	}
	weights, err := WeightsFile(ad)
	if err != nil {
		return nil, err
	}
	m, err := autoencoder.New(cfg, dev, torch.Float32, nil)
	if err != nil {
		return nil, fmt.Errorf("diffusers: %w", err)
	}
	if err := LoadAutoencoderWeights(weights, m); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// LoadAutoencoderWeights copies an AutoencoderKL state dict (current or
// legacy attention names) into m after checking it whole: every tensor present under its name, no other tensor,
// every shape the model's, every value finite. The first problems are
// named, and nothing is copied then.
func LoadAutoencoderWeights(path string, m *autoencoder.Model) error {
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	loaded, _, err := s.LoadSafetensors(path, torch.CPU)
	if err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	all := make(map[string]*torch.Tensor, len(loaded))
	for k, v := range loaded {
		all[modernName(k)] = v // the middle blocks' attention, under its legacy names in older files
	}
	params := m.Params()
	if err := nn.CheckStateDict(params, all); err != nil {
		return fmt.Errorf("diffusers: %s does not fit its config.json: %w", path, err)
	}
	for _, p := range params {
		bad, err := s.Sum(s.LogicalNot(s.IsFinite(all[p.Name])), nil, false).Item()
		if err != nil {
			return fmt.Errorf("diffusers: %s: %w", path, err)
		}
		if bad > 0 {
			return fmt.Errorf("diffusers: %s: weight %s holds %d values that are not finite (NaN or Inf): the weights are broken",
				path, p.Name, int64(bad))
		}
	}
	if err := nn.LoadStateDict(params, all); err != nil {
		return fmt.Errorf("diffusers: %s: %w", path, err)
	}
	return nil
}

// WriteAutoencoder writes an AutoencoderKL folder: dir/config.json (every
// field of cfg, with _class_name and _diffusers_version) and
// dir/diffusion_pytorch_model.safetensors (params, an autoencoder's of
// that config, in float32 under diffusers' names). cfg may differ from the
// model's own in its scaling and shift factors: a latent model's folder
// records the factors it was trained with.
func WriteAutoencoder(dir string, cfg autoencoder.Config, params []nn.Param) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	tensors := make(map[string]*torch.Tensor)
	for _, p := range params {
		tensors[p.Name] = s.Contiguous(s.ToDType(s.To(p.T, torch.CPU), torch.Float32))
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	if err := torch.SaveSafetensors(filepath.Join(dir, "diffusion_pytorch_model.safetensors"), tensors, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	return WriteJSON(filepath.Join(dir, "config.json"),
		autoencoderFile{ClassName: AutoencoderClass, DiffusersVersion: Version, Config: cfg})
}
