package torch

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

const blasHelperEnv = "DDPM_TEST_BLAS_HELPER"

// BLAS describes OpenBLAS as OpenBLAS does, with the kernels it runs: those
// OPENBLAS_CORETYPE names when it is set, checked in child processes (OpenBLAS
// reads it once, when it loads).
func TestBLAS(t *testing.T) {
	s := BLAS()
	if s == "" {
		t.Skip("libtorch's BLAS is not OpenBLAS")
	}
	if !strings.HasPrefix(s, "OpenBLAS ") || strings.ContainsAny(s, "\x00\n") {
		t.Fatalf("BLAS() = %q, want OpenBLAS's configuration line", s)
	}
	if !strings.Contains(s, "DYNAMIC_ARCH") || runtime.GOARCH != "amd64" {
		return // built for one CPU: no kernels to choose
	}
	for _, core := range []string{"Haswell", "Sandybridge"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBLASHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), "OPENBLAS_CORETYPE="+core, blasHelperEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", core, err, out)
		}
		if !strings.Contains(string(out), " "+core+" ") {
			t.Errorf("OPENBLAS_CORETYPE=%s: BLAS() does not name the kernels:\n%s", core, out)
		}
	}
}

func TestBLASHelper(t *testing.T) {
	if os.Getenv(blasHelperEnv) == "" {
		t.Skip("run by TestBLAS")
	}
	os.Stdout.WriteString("blas=" + BLAS() + "\n")
}
