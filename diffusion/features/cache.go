package features

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"math"
	"os"
	"path/filepath"

	"github.com/ddpm-go/ddpm/diffusion/data"
)

// CacheDirEnv names the environment variable that overrides the cache
// directory.
const CacheDirEnv = "DDPM_CACHE_DIR"

// DefaultCacheDir is where trained classifiers are kept and the Inception
// file is looked for: $DDPM_CACHE_DIR if set, else the ddpm folder of the
// user's cache directory (os.UserCacheDir: ~/.cache/ddpm on Linux).
func DefaultCacheDir() (string, error) {
	if d := os.Getenv(CacheDirEnv); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("features: no cache directory (set %s): %w", CacheDirEnv, err)
	}
	return filepath.Join(d, "ddpm"), nil
}

// ClassifierKey is the cache key of the classifier that TrainClassifier
// would train on ds with o: the hex SHA-256 of ClassifierVersion, the
// recipe (every option that changes the weights), the images' shape and
// values, and the labels. Any change to the data gives another key.
func ClassifierKey(ds *data.Dataset, o TrainOptions) string {
	o = o.withDefaults()
	h := sha256.New()
	recipe, _ := json.Marshal(struct {
		Version     int     `json:"version"`
		Epochs      int     `json:"epochs"`
		BatchSize   int     `json:"batch_size"`
		LR          float64 `json:"lr"`
		WeightDecay float64 `json:"weight_decay"`
		Seed        uint64  `json:"seed"`
		Width       int     `json:"width"`
		Shape       [4]int  `json:"shape"`
		Classes     int     `json:"classes"`
	}{ClassifierVersion, o.Epochs, o.BatchSize, o.LR, o.WeightDecay, o.Seed, o.Width,
		[4]int{ds.N, ds.C, ds.H, ds.W}, ds.NumClasses})
	fmt.Fprintf(h, "ddpm feature classifier\n%s\n", recipe)
	hashFloat32s(h, ds.Images)
	var b [8]byte
	for _, l := range ds.Labels {
		binary.LittleEndian.PutUint64(b[:], uint64(l))
		h.Write(b[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// hashFloat32s writes v to h as little-endian float32, a block at a time.
func hashFloat32s(h hash.Hash, v []float32) {
	buf := make([]byte, 0, 1<<16)
	for _, x := range v {
		buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(x))
		if len(buf) == cap(buf) {
			h.Write(buf)
			buf = buf[:0]
		}
	}
	h.Write(buf)
}

// ClassifierPath is where ClassifierFor keeps the classifier of key under
// the cache directory dir: dir/classifiers/<key>.safetensors.
func ClassifierPath(dir, key string) string {
	return filepath.Join(dir, "classifiers", key+".safetensors")
}

// ClassifierFor returns the classifier trained on ds with o, from the cache
// directory dir ("" means DefaultCacheDir) when it is there, and otherwise
// trains it (reporting through o.OnProgress) and stores it there. A cached
// file that cannot be read is replaced. Info.Cached tells which happened.
func ClassifierFor(ctx context.Context, ds *data.Dataset, dir string, o TrainOptions) (*Classifier, error) {
	if err := checkLabelled(ds, "training"); err != nil {
		return nil, err
	}
	if dir == "" {
		var err error
		if dir, err = DefaultCacheDir(); err != nil {
			return nil, err
		}
	}
	key := ClassifierKey(ds, o)
	path := ClassifierPath(dir, key)
	if _, err := os.Stat(path); err == nil {
		c, err := LoadClassifier(path, o.Device)
		if err == nil && c.Info.DataKey == key {
			c.Info.Cached = true
			return c, nil
		}
		if err == nil {
			c.Close()
		}
	}
	c, err := TrainClassifier(ctx, ds, o)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		c.Close()
		return nil, fmt.Errorf("features: cannot cache the classifier: %w", err)
	}
	if err := c.Save(path); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
