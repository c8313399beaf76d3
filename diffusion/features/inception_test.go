package features

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/internal/inceptiontest"
)

// standInDim is the feature width of the stand-in network in these tests;
// the real one has 2048.
const standInDim = 64

func loadStandIn(t *testing.T) (*TorchScriptExtractor, inceptiontest.Fixture) {
	t.Helper()
	fix := inceptiontest.Write(t, standInDim)
	e, err := LoadInception(fix.Path, InceptionOptions{Dim: standInDim})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e, fix
}

// The features and class probabilities are those of StyleGAN's pipeline:
// 8-bit quantisation, its bilinear resize to 299, (x − 128)/128, the body,
// and the output layer without its bias.
func TestInceptionMatchesStyleGANPipeline(t *testing.T) {
	e, fix := loadStandIn(t)
	if e.Dim() != standInDim || e.Head != "output.forward" || len(e.HeadBias) != 1008 {
		t.Fatalf("dim %d, head %q with %d biases", e.Dim(), e.Head, len(e.HeadBias))
	}
	for i, b := range fix.Bias {
		if math.Abs(float64(e.HeadBias[i])-b) > 1e-6 {
			t.Fatalf("bias %d: %v, PyTorch %v", i, e.HeadBias[i], b)
		}
	}
	ds := &data.Dataset{N: 2, C: 1, H: 16, W: 16, Images: fix.Input}
	fs, err := Extract(context.Background(), e, ds, ExtractOptions{Batch: 1})
	if err != nil {
		t.Fatal(err)
	}
	if fs.N != 2 || fs.Dim != standInDim || fs.Classes != 1008 {
		t.Fatalf("features %d×%d, %d classes", fs.N, fs.Dim, fs.Classes)
	}
	closeTo(t, "features", fs.Features, fix.Features, 1e-4)
	closeTo(t, "probabilities", fs.Probs, fix.Probs, 1e-6)
}

func closeTo(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Abs(got[i]-want[i]) > tol*(1+math.Abs(want[i])) {
			t.Fatalf("%s[%d] = %v, PyTorch %v", what, i, got[i], want[i])
		}
	}
}

func TestInceptionFIDOfASetWithItself(t *testing.T) {
	e, _ := loadStandIn(t)
	ds := patterns(40, 16, 4)
	fs, err := Extract(context.Background(), e, ds, ExtractOptions{Batch: 16})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := NewReference(fs)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Compare(fs, ref, Options{KIDSubsets: 3, KIDSubsetSize: 20})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(r.FID) > 1e-6 || !r.HasKID || math.Abs(r.KID) > 0.05 || !r.HasIS || r.IS < 1 {
		t.Errorf("against itself: %+v", r)
	}
	other, err := Evaluate(context.Background(), e, patterns(40, 16, 5), ref, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !(other.FID > 0) {
		t.Errorf("FID of other images %v, want > 0", other.FID)
	}
}

func TestInceptionForwardNeedsReturnFeatures(t *testing.T) {
	fix := inceptiontest.Write(t, standInDim)
	_, err := LoadInception(fix.Path, InceptionOptions{Method: "forward", Dim: standInDim})
	if err == nil || !strings.Contains(err.Error(), "return_features") || !strings.Contains(err.Error(), "layers.forward") {
		t.Errorf("forward: %v", err)
	}
	// A module without the body's method is refused when loaded.
	_, err = LoadInception(fix.Path, InceptionOptions{Method: "body.forward", Dim: standInDim})
	if err == nil || !strings.Contains(err.Error(), "body") {
		t.Errorf("missing method: %v", err)
	}
	_, err = LoadInception(fix.Path, InceptionOptions{})
	if err == nil || !strings.Contains(err.Error(), "not the 2048 features") {
		t.Errorf("wrong width: %v", err)
	}
}

func TestMissingInceptionSaysWhatToGet(t *testing.T) {
	cache := t.TempDir()
	missing := filepath.Join(t.TempDir(), InceptionFile)
	_, err1 := LoadInception(missing, InceptionOptions{})
	_, err2 := FindInception(missing, cache)
	_, err3 := FindInception("", cache)
	_, err4 := LoadInception("", InceptionOptions{})
	for i, err := range []error{err1, err2, err3, err4} {
		if !errors.Is(err, ErrNoInception) {
			t.Fatalf("error %d: %v does not match ErrNoInception", i+1, err)
		}
		for _, want := range []string{"inception-2015-12-05.pt", InceptionURL, "--inception FILE", "DDPM_INCEPTION"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %d %q lacks %q", i+1, err, want)
			}
		}
	}
	if !strings.Contains(err1.Error(), missing) || !errors.Is(err1, os.ErrNotExist) {
		t.Errorf("missing path not named: %v", err1)
	}
	if !strings.Contains(err3.Error(), filepath.Join(cache, InceptionFile)) {
		t.Errorf("cache location not named: %v", err3)
	}
	// The cache directory is searched.
	os.WriteFile(filepath.Join(cache, InceptionFile), nil, 0o644)
	if p, err := FindInception("", cache); err != nil || p != filepath.Join(cache, InceptionFile) {
		t.Errorf("FindInception in the cache: %q, %v", p, err)
	}
}

func TestResizeMatrix(t *testing.T) {
	// Output pixel i reads input position i·in/out, clamped to the last.
	got := resizeMatrix(4, 2)
	want := []float32{1, 0, 0.5, 0.5, 0, 1, 0, 1}
	if !slices.Equal(got, want) {
		t.Errorf("4 from 2: %v, want %v", got, want)
	}
	for _, c := range [][2]int{{299, 32}, {299, 28}, {7, 20}, {5, 5}} {
		m := resizeMatrix(c[0], c[1])
		for i := range c[0] {
			var sum float32
			for _, v := range m[i*c[1] : (i+1)*c[1]] {
				sum += v
			}
			if math.Abs(float64(sum)-1) > 1e-6 {
				t.Errorf("%d from %d: row %d sums to %v", c[0], c[1], i, sum)
			}
			if c[0] == c[1] && m[i*c[1]+i] != 1 {
				t.Errorf("same size is not the identity at row %d", i)
			}
		}
	}
}
