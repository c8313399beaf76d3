package metrics

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"testing"
)

// referencePython returns a Python interpreter with numpy and scipy
// ($DDPM_PYTHON, else Debian's /usr/bin/python3); the test is skipped when
// there is none.
func referencePython(t testing.TB) string {
	t.Helper()
	py := os.Getenv("DDPM_PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
	}
	if _, err := exec.LookPath(py); err != nil {
		t.Skipf("no Python interpreter at %s (set DDPM_PYTHON to one with numpy and scipy): %v", py, err)
	}
	if out, err := exec.Command(py, "-c", "import scipy, numpy").CombinedOutput(); err != nil {
		t.Skipf("%s cannot import scipy and numpy (install python3-scipy or set DDPM_PYTHON): %v: %s", py, err, bytes.TrimSpace(out))
	}
	return py
}

// runPython runs script with args, writes in as JSON to its stdin (when not
// nil) and decodes its stdout as JSON into out (when not nil).
func runPython(t testing.TB, script string, in, out any, args ...string) {
	t.Helper()
	py := referencePython(t)
	cmd := exec.Command(py, append([]string{"-c", script}, args...)...)
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdin = bytes.NewReader(b)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("python reference failed: %v\n%s", err, stderr.String())
	}
	if out != nil {
		if err := json.Unmarshal(stdout, out); err != nil {
			t.Fatalf("python reference printed bad JSON: %v\n%s", err, stdout)
		}
	}
}

// gaussianFeatures returns n rows of d correlated Gaussian features,
// x = shift + z·L with z standard normal and L a fixed random mixing matrix.
func gaussianFeatures(rng *rand.Rand, n, d int, shift float64) []float64 {
	mix := make([]float64, d*d)
	for i := range mix {
		mix[i] = rng.NormFloat64() / math.Sqrt(float64(d))
	}
	x := make([]float64, n*d)
	z := make([]float64, d)
	for r := range n {
		for k := range z {
			z[k] = rng.NormFloat64()
		}
		for j := range d {
			v := shift
			for k, zk := range z {
				v += zk * mix[k*d+j]
			}
			x[r*d+j] = v
		}
	}
	return x
}

// closeRel reports whether got is within tol of want, relative to
// max(|want|, scale).
func closeRel(got, want, tol, scale float64) bool {
	return math.Abs(got-want) <= tol*math.Max(math.Abs(want), scale)
}
