package features

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
)

// Metadata keys of a saved classifier.
const (
	metaFormat     = "format"
	metaVersion    = "classifier_version"
	metaConfig     = "config"
	metaDataKey    = "data_key"
	metaAccuracy   = "accuracy"
	metaAccuracyOn = "accuracy_on"
	metaClassNames = "class_names"
)

// classifierFormat is the format metadata of a saved classifier.
const classifierFormat = "ddpm-feature-classifier"

// Save writes the weights and Info (data key, image size, channels,
// classes, accuracy, class names) to path as safetensors, atomically. On
// success Info.Path is path.
func (c *Classifier) Save(path string) error {
	cfg, err := json.Marshal(c.Config)
	if err != nil {
		return err
	}
	meta := map[string]string{
		metaFormat:  classifierFormat,
		metaVersion: strconv.Itoa(ClassifierVersion),
		metaConfig:  string(cfg),
		metaDataKey: c.Info.DataKey,
	}
	if c.Info.AccuracyOn != "" {
		meta[metaAccuracy] = strconv.FormatFloat(c.Info.Accuracy, 'g', -1, 64)
		meta[metaAccuracyOn] = c.Info.AccuracyOn
	}
	if len(c.Info.ClassNames) > 0 {
		names, err := json.Marshal(c.Info.ClassNames)
		if err != nil {
			return err
		}
		meta[metaClassNames] = string(names)
	}
	if err := torch.SaveSafetensors(path, nn.StateDict(c.params), meta); err != nil {
		return fmt.Errorf("features: save classifier: %w", err)
	}
	c.Info.Path = path
	return nil
}

// LoadClassifier reads a classifier written by Save onto dev. A file of
// another ClassifierVersion is refused.
func LoadClassifier(path string, dev torch.Device) (*Classifier, error) {
	s := torch.NewScope(torch.NoGrad)
	defer s.Close()
	ts, meta, err := s.LoadSafetensors(path, dev)
	if err != nil {
		return nil, fmt.Errorf("features: load classifier: %w", err)
	}
	if meta[metaFormat] != classifierFormat {
		return nil, fmt.Errorf("features: %s is not a feature classifier (format %q)", path, meta[metaFormat])
	}
	if v := meta[metaVersion]; v != strconv.Itoa(ClassifierVersion) {
		return nil, fmt.Errorf("features: %s holds a classifier of version %s; this program makes version %d", path, v, ClassifierVersion)
	}
	var cfg ClassifierConfig
	if err := json.Unmarshal([]byte(meta[metaConfig]), &cfg); err != nil {
		return nil, fmt.Errorf("features: %s: bad classifier configuration: %w", path, err)
	}
	info := ClassifierInfo{DataKey: meta[metaDataKey], AccuracyOn: meta[metaAccuracyOn], Path: path}
	if info.AccuracyOn != "" {
		if info.Accuracy, err = strconv.ParseFloat(meta[metaAccuracy], 64); err != nil {
			return nil, fmt.Errorf("features: %s: bad accuracy %q", path, meta[metaAccuracy])
		}
	}
	if names := meta[metaClassNames]; names != "" {
		if err := json.Unmarshal([]byte(names), &info.ClassNames); err != nil {
			return nil, fmt.Errorf("features: %s: bad class names: %w", path, err)
		}
	}
	// The initial weights are overwritten; a private generator keeps
	// libtorch's global one untouched.
	gen, err := torch.NewGenerator(0, dev)
	if err != nil {
		return nil, err
	}
	defer gen.Close()
	c, err := NewClassifier(cfg, dev, gen)
	if err != nil {
		return nil, fmt.Errorf("features: %s: %w", path, err)
	}
	if err := nn.LoadStateDict(c.params, ts); err != nil {
		c.Close()
		return nil, fmt.Errorf("features: %s: %w", path, err)
	}
	c.Info = info
	return c, nil
}
