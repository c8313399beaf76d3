// Package pyref runs reference computations for tests: Debian's python3
// with torch (the same libtorch), numpy and scipy, exchanging JSON.
package pyref

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"testing"
)

// Python is the interpreter with torch, numpy and scipy ($DDPM_PYTHON, else
// /usr/bin/python3); the test is skipped when there is none.
func Python(t testing.TB) string {
	t.Helper()
	py := os.Getenv("DDPM_PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
	}
	if err := exec.Command(py, "-c", "import torch, numpy, scipy").Run(); err != nil {
		t.Skipf("no python3 with torch, numpy and scipy at %s (install python3-torch python3-scipy or set DDPM_PYTHON): %v", py, err)
	}
	return py
}

// Run runs script with args, writes in as JSON to its stdin (when not nil)
// and decodes its stdout as JSON into out (when not nil).
func Run(t testing.TB, script string, in, out any, args ...string) {
	t.Helper()
	py := Python(t)
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
