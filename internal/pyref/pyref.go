// Package pyref runs reference computations for tests: Debian's python3
// with torch (the same libtorch), numpy and scipy, exchanging JSON.
//
// A test whose reference interpreter is missing is skipped, unless the
// environment variable DDPM_REQUIRE_REFERENCES is 1 (as in CI): then it
// fails with the same message, so that a machine without the references
// cannot pass by skipping every comparison.
package pyref

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// RequireEnv names the environment variable that, set to 1, turns a missing
// reference interpreter from a skip into a test failure.
const RequireEnv = "DDPM_REQUIRE_REFERENCES"

// Interpreter is the reference interpreter: $DDPM_PYTHON, else
// /usr/bin/python3 (Debian's, with python3-torch; the python3 first on PATH
// may be another one).
func Interpreter() string {
	if py := os.Getenv("DDPM_PYTHON"); py != "" {
		return py
	}
	return "/usr/bin/python3"
}

// Missing reports that a reference is not available: it skips the test, or
// fails it when DDPM_REQUIRE_REFERENCES=1.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// Python is the interpreter with torch, numpy and scipy; without one the
// test is skipped (or fails, see Missing).
func Python(t testing.TB) string {
	t.Helper()
	py := Interpreter()
	if err := probe(py, "import torch, numpy, scipy"); err != nil {
		Missing(t, "no python3 with torch, numpy and scipy at %s (install python3-torch python3-scipy or set DDPM_PYTHON): %v", py, err)
	}
	return py
}

// Require is the interpreter after checking that it runs code, typically
// the imports a test needs ("import numpy"); without one the test is
// skipped (or fails, see Missing).
func Require(t testing.TB, code string) string {
	t.Helper()
	py := Interpreter()
	if err := probe(py, code); err != nil {
		Missing(t, "python3 at %s cannot run %q (install python3-torch python3-scipy or set DDPM_PYTHON): %v", py, code, err)
	}
	return py
}

// probes caches each interpreter's answer to each probe: importing torch
// takes a second, and the answer does not change while the tests run.
var probes sync.Map // [2]string{py, code} -> error (nil stored as probeOK)

type probeOK struct{}

func probe(py, code string) error {
	key := [2]string{py, code}
	if v, ok := probes.Load(key); ok {
		if err, isErr := v.(error); isErr {
			return err
		}
		return nil
	}
	var err error
	if out, runErr := exec.Command(py, "-c", code).CombinedOutput(); runErr != nil {
		err = runErr
		if msg := strings.TrimSpace(string(out)); msg != "" {
			lines := strings.Split(msg, "\n")
			err = fmt.Errorf("%w: %s", runErr, lines[len(lines)-1])
		}
	}
	if err != nil {
		probes.Store(key, err)
	} else {
		probes.Store(key, probeOK{})
	}
	return err
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
