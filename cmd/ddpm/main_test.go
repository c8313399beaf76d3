package main

import (
	"os"
	"testing"
)

// TestMain turns off the final evaluation of training runs (--final-eval,
// 1000 samples by default) unless a test asks for it: scoring every tiny
// test run would cost seconds each.
func TestMain(m *testing.M) {
	os.Setenv("DDPM_FINAL_EVAL", "0")
	os.Exit(m.Run())
}
