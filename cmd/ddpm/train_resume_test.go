package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --resume --steps N is kept: the next plain --resume goes on to N, not
// to the steps the run was started with.
func TestResumeStepsAreKept(t *testing.T) {
	dataDir, runDir := t.TempDir(), filepath.Join(t.TempDir(), "run")
	writeIDX(t, dataDir, 16)
	common := []string{"--device", "cpu", "--quiet"}
	if code, out, errOut := ddpm(t, append([]string{"train", "--preset", "tiny", "--data", dataDir, "--steps", "2", "--batch", "4",
		"--sample-n", "1", "--T", "20", "--out", runDir}, common...)...); code != 0 {
		t.Fatalf("train: exit %d: %s%s", code, out, errOut)
	}
	if code, out, errOut := ddpm(t, append([]string{"train", "--resume", runDir, "--steps", "3"}, common...)...); code != 0 {
		t.Fatalf("resume --steps 3: exit %d: %s%s", code, out, errOut)
	}
	cfg, err := readRunConfig(runDir)
	if err != nil || cfg.Train.Steps != 3 {
		t.Fatalf("%s: steps %d (%v), want 3", configFile, cfg.Train.Steps, err)
	}
	code, out, errOut := ddpm(t, append([]string{"train", "--resume", runDir}, common...)...)
	if code != 0 || !strings.Contains(out, "(step 3 of 3)") {
		t.Fatalf("plain resume: exit %d: %s%s", code, out, errOut)
	}
}

// Held-out evaluation of data too small to hold any image out is refused
// at start-up, in one line naming the fix, before anything is trained.
func TestEvalEveryNeedsHeldOutImages(t *testing.T) {
	dataDir, runDir := t.TempDir(), filepath.Join(t.TempDir(), "run")
	writeIDX(t, dataDir, 9)
	code, out, errOut := ddpm(t, "train", "--preset", "tiny", "--data", dataDir, "--steps", "2", "--batch", "4",
		"--eval-every", "1", "--out", runDir, "--device", "cpu", "--quiet")
	if code != 1 || !strings.Contains(errOut, "--eval-every 1 needs held-out images") ||
		!strings.Contains(errOut, "--eval-every 0") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("exit %d, %q%q, want one line refusing --eval-every", code, out, errOut)
	}
	if _, err := os.Stat(runDir); !os.IsNotExist(err) {
		t.Errorf("the refused run created %s (%v)", runDir, err)
	}
}
