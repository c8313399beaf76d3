package pyref

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// recorder is a testing.TB that records how a test would have ended.
type recorder struct {
	testing.TB
	ended, msg string
}

type stop struct{}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.ended, r.msg = "fatal", fmt.Sprintf(format, args...)
	panic(stop{})
}
func (r *recorder) Skipf(format string, args ...any) {
	r.ended, r.msg = "skip", fmt.Sprintf(format, args...)
	panic(stop{})
}

// call runs f against a recorder and returns how it ended ("" when it
// returned normally) and its message.
func call(t *testing.T, f func(testing.TB)) (ended, msg string) {
	r := &recorder{TB: t}
	func() {
		defer func() {
			if v := recover(); v != nil {
				if _, ok := v.(stop); !ok {
					panic(v)
				}
			}
		}()
		f(r)
	}()
	return r.ended, r.msg
}

func TestMissingInterpreterSkipsOrFails(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-python")
	t.Setenv("DDPM_PYTHON", missing)
	for _, c := range []struct {
		require string
		want    string
	}{{"", "skip"}, {"0", "skip"}, {"1", "fatal"}} {
		t.Setenv(RequireEnv, c.require)
		for name, f := range map[string]func(testing.TB){
			"Python":  func(tb testing.TB) { Python(tb) },
			"Require": func(tb testing.TB) { Require(tb, "import numpy") },
			"Run":     func(tb testing.TB) { Run(tb, "print(1)", nil, nil) },
		} {
			ended, msg := call(t, f)
			if ended != c.want {
				t.Errorf("%s with %s=%q ended with %q, want %q", name, RequireEnv, c.require, ended, c.want)
			}
			if !strings.Contains(msg, missing) {
				t.Errorf("%s: message %q does not name the interpreter", name, msg)
			}
		}
	}
}

func TestRequirePassesWhenTheProbeRuns(t *testing.T) {
	t.Setenv("DDPM_PYTHON", "/bin/true") // runs any "-c code" successfully
	t.Setenv(RequireEnv, "1")
	var py string
	if ended, msg := call(t, func(tb testing.TB) { py = Require(tb, "import numpy") }); ended != "" {
		t.Fatalf("Require ended with %s: %s", ended, msg)
	}
	if py != "/bin/true" {
		t.Errorf("Require returned %q", py)
	}
}
