package torch

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestDefaultThreadsPolicy(t *testing.T) {
	for _, c := range []struct {
		name string
		env  map[string]string
		cpus int
		want int
	}{
		{"plain", nil, 8, 8},
		{"OMP_NUM_THREADS set", map[string]string{"OMP_NUM_THREADS": "3"}, 8, 0},
		{"OMP_NUM_THREADS wins over RANK", map[string]string{"OMP_NUM_THREADS": "3", "RANK": "0"}, 8, 0},
		{"rank without LOCAL_WORLD_SIZE", map[string]string{"RANK": "1"}, 8, 1},
		{"four local ranks", map[string]string{"RANK": "1", "LOCAL_WORLD_SIZE": "4"}, 8, 2},
		{"more local ranks than CPUs", map[string]string{"RANK": "0", "LOCAL_WORLD_SIZE": "16"}, 8, 1},
		{"bad LOCAL_WORLD_SIZE", map[string]string{"RANK": "0", "LOCAL_WORLD_SIZE": "x"}, 8, 1},
		{"LOCAL_WORLD_SIZE without RANK", map[string]string{"LOCAL_WORLD_SIZE": "4"}, 8, 8},
	} {
		getenv := func(k string) string { return c.env[k] }
		if got := defaultThreads(getenv, c.cpus); got != c.want {
			t.Errorf("%s: %d threads, want %d", c.name, got, c.want)
		}
	}
}

// fakeThreads is a threadSetting that records what it applies.
func fakeThreads(fail error) (*threadSetting, *[]int) {
	var applied []int
	return &threadSetting{apply: func(n int) error {
		if fail != nil {
			return fail
		}
		applied = append(applied, n)
		return nil
	}}, &applied
}

func TestUseDefaultThreadsAppliesTheDefaultOnce(t *testing.T) {
	ts, applied := fakeThreads(nil)
	counts := 0
	count := func() int { counts++; return 3 }
	for range 3 {
		if err := ts.useDefault(count); err != nil {
			t.Fatal(err)
		}
	}
	if counts != 1 || len(*applied) != 1 || (*applied)[0] != 3 {
		t.Errorf("default computed %d times and applied %v, want once and [3]", counts, *applied)
	}
	// An explicit count after the default is applied as usual.
	if err := ts.set(5); err != nil || len(*applied) != 2 || (*applied)[1] != 5 {
		t.Errorf("explicit count after the default: %v, applied %v", err, *applied)
	}
}

func TestUseDefaultThreadsLeavesAnExplicitCount(t *testing.T) {
	ts, applied := fakeThreads(nil)
	if err := ts.set(2); err != nil {
		t.Fatal(err)
	}
	if err := ts.useDefault(func() int { return 7 }); err != nil {
		t.Fatal(err)
	}
	if len(*applied) != 1 || (*applied)[0] != 2 {
		t.Errorf("applied %v, want only the explicit [2]", *applied)
	}

	// A default of 0 leaves libtorch's count.
	ts, applied = fakeThreads(nil)
	if err := ts.useDefault(func() int { return 0 }); err != nil || len(*applied) != 0 {
		t.Errorf("a default of 0 applied %v (%v)", *applied, err)
	}

	// A failed explicit call is not a choice: the default still applies.
	boom := errors.New("boom")
	ts, _ = fakeThreads(boom)
	if err := ts.set(0); !errors.Is(err, boom) {
		t.Fatalf("failed explicit call returned %v", err)
	}
	if ts.explicit {
		t.Error("a failed SetNumThreads counts as the program's choice")
	}
	if err := ts.useDefault(func() int { return 4 }); !errors.Is(err, boom) {
		t.Errorf("default's failure: %v, want %v", err, boom)
	}
	if err := ts.useDefault(func() int { return 4 }); !errors.Is(err, boom) {
		t.Errorf("second call: %v, want the first call's %v", err, boom)
	}
}

const threadsHelperEnv = "DDPM_TORCH_THREADS_HELPER"

// TestThreadsHelper runs in a child process started by
// TestUseDefaultThreadsInAProcess, where no test has set a count yet.
func TestThreadsHelper(t *testing.T) {
	mode := os.Getenv(threadsHelperEnv)
	if mode == "" {
		t.Skip("started only by TestUseDefaultThreadsInAProcess")
	}
	// Start from a count that is neither libtorch's default nor the
	// library's, set in both modes, but as the program's choice only in one.
	var err error
	if mode == "explicit" {
		err = SetNumThreads(3)
	} else {
		err = threads.apply(3)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := UseDefaultThreads(); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("threads=" + strconv.Itoa(NumThreads()) + "\n")
}

// In a real process, UseDefaultThreads applies DefaultThreads (1 for a rank
// without LOCAL_WORLD_SIZE) unless the program called SetNumThreads first.
func TestUseDefaultThreadsInAProcess(t *testing.T) {
	for mode, want := range map[string]int{"default": 1, "explicit": 3} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestThreadsHelper$", "-test.count=1")
		for _, kv := range os.Environ() {
			k, _, _ := strings.Cut(kv, "=")
			if k != "OMP_NUM_THREADS" && k != "LOCAL_WORLD_SIZE" && k != "RANK" {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, threadsHelperEnv+"="+mode, "RANK=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", mode, err, out)
		}
		if !strings.Contains(string(out), "threads="+strconv.Itoa(want)+"\n") {
			t.Errorf("%s: want threads=%d, got\n%s", mode, want, out)
		}
	}
}
