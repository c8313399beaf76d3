package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddpm-go/ddpm/torch"
	"github.com/ddpm-go/ddpm/torch/safetensors"
)

// ddpm runs the CLI in-process and returns its exit status and output.
func ddpm(t testing.TB, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(append([]string{"ddpm"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// writeIDX writes n labelled 16x16 images as gzipped IDX files in dir.
func writeIDX(t *testing.T, dir string, n int) {
	t.Helper()
	var img, lab bytes.Buffer
	binary.Write(&img, binary.BigEndian, []uint32{0x803, uint32(n), 16, 16})
	binary.Write(&lab, binary.BigEndian, []uint32{0x801, uint32(n)})
	for i := range n {
		for p := range 256 {
			if (p/16+p%16+i)%4 < 2 {
				img.WriteByte(255)
			} else {
				img.WriteByte(0)
			}
		}
		lab.WriteByte(byte(i % 3))
	}
	for name, b := range map[string][]byte{"train-images-idx3-ubyte.gz": img.Bytes(), "train-labels-idx1-ubyte.gz": lab.Bytes()} {
		var z bytes.Buffer
		w := gzip.NewWriter(&z)
		w.Write(b)
		w.Close()
		if err := os.WriteFile(filepath.Join(dir, name), z.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// tinyRun trains the tiny preset for a few steps on generated data.
func tinyRun(t *testing.T, extra ...string) string {
	t.Helper()
	dataDir, runDir := t.TempDir(), filepath.Join(t.TempDir(), "run")
	writeIDX(t, dataDir, 48)
	args := append([]string{"train", "--preset", "tiny", "--data", dataDir, "--steps", "12", "--batch", "8",
		"--checkpoint-every", "6", "--sample-every", "6", "--sample-n", "4", "--log-every", "3", "--out", runDir, "--quiet"}, extra...)
	if code, out, errOut := ddpm(t, args...); code != 0 {
		t.Fatalf("train failed (%d): %s %s", code, out, errOut)
	}
	return runDir
}

func TestTrainThenSample(t *testing.T) {
	runDir := tinyRun(t)
	for _, f := range []string{"config.json", "metrics.jsonl", "loss.png", "ckpt-00000012.safetensors", "samples/step-00000006.png"} {
		if _, err := os.Stat(filepath.Join(runDir, f)); err != nil {
			t.Errorf("run directory lacks %s", f)
		}
	}
	b, _ := os.ReadFile(filepath.Join(runDir, "metrics.jsonl"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var rec map[string]any
	if len(lines) != 4 || json.Unmarshal([]byte(lines[3]), &rec) != nil || rec["step"] != float64(12) {
		t.Fatalf("metrics log: %q", b)
	}
	for _, key := range []string{"loss", "loss_by_quartile", "lr", "grad_norm", "images_per_s"} {
		if _, ok := rec[key]; !ok {
			t.Errorf("metrics record lacks %s", key)
		}
	}
	grid := filepath.Join(t.TempDir(), "grid.png")
	if code, _, errOut := ddpm(t, "sample", "--run", runDir, "--sampler", "ddim", "--steps", "5", "--n", "64", "--out", grid, "--quiet"); code != 0 {
		t.Fatal(errOut)
	}
	f, err := os.Open(grid)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil || img.Bounds().Dx() != 8*18+2 || img.Bounds().Dy() != 8*18+2 {
		t.Fatalf("grid %v, %v: want 8x8 images of 16 pixels with 2-pixel borders", img.Bounds(), err)
	}
	ckpt := filepath.Join(runDir, "ckpt-00000006.safetensors")
	dir := t.TempDir()
	if code, _, errOut := ddpm(t, "sample", "--checkpoint", ckpt, "--sampler", "dpmpp-2m", "--steps", "4", "--n", "3",
		"--out", "", "--out-dir", dir, "--trajectory", filepath.Join(dir, "traj.png"), "--quiet"); code != 0 {
		t.Fatal(errOut)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 4 {
		t.Errorf("out-dir has %d files, want 3 images and a trajectory", len(entries))
	}
	if code, out, _ := ddpm(t, "info", "--run", runDir, "--json"); code != 0 || !strings.Contains(out, `"step": 12`) {
		t.Errorf("info: %s", out)
	}
}

func TestResumeContinues(t *testing.T) {
	runDir := tinyRun(t)
	code, out, errOut := ddpm(t, "train", "--resume", runDir, "--steps", "18", "--quiet")
	if code != 0 || !strings.Contains(out, "resumed from") {
		t.Fatalf("resume: %d %s %s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(runDir, "ckpt-00000018.safetensors")); err != nil {
		t.Fatal("no checkpoint at step 18")
	}
}

func TestClassConditionalGuidance(t *testing.T) {
	runDir := tinyRun(t, "--classes")
	grid := filepath.Join(t.TempDir(), "g.png")
	if code, _, errOut := ddpm(t, "sample", "--run", runDir, "--steps", "3", "--n", "4", "--class", "1", "--guidance", "3", "--out", grid, "--quiet"); code != 0 {
		t.Fatal(errOut)
	}
	if code, _, errOut := ddpm(t, "sample", "--run", runDir, "--steps", "3", "--n", "4", "--class", "7", "--out", grid, "--quiet"); code == 0 || !strings.Contains(errOut, "class 7 out of range") {
		t.Errorf("class out of range: %q", errOut)
	}
}

// Every mistake ends with one line "ddpm: ..." and status 1, never a trace.
func TestErrorsAreOneLine(t *testing.T) {
	runDir := tinyRun(t)
	tmp := t.TempDir()
	notIDX := filepath.Join(tmp, "bad")
	os.MkdirAll(notIDX, 0o755)
	os.WriteFile(filepath.Join(notIDX, "train-images-idx3-ubyte"), []byte{0, 0, 8, 3, 0, 0, 0, 9, 0, 0, 0, 16, 0, 0, 0, 16, 1, 2}, 0o644)
	truncated := filepath.Join(tmp, "trunc")
	os.MkdirAll(truncated, 0o755)
	full, _ := os.ReadFile(filepath.Join(runDir, "ckpt-00000012.safetensors"))
	os.WriteFile(filepath.Join(tmp, "cut.safetensors"), full[:len(full)/2], 0o644)
	os.WriteFile(filepath.Join(tmp, "text.safetensors"), []byte("hello"), 0o644)
	corruptPNG := filepath.Join(tmp, "pngs")
	os.MkdirAll(corruptPNG, 0o755)
	os.WriteFile(filepath.Join(corruptPNG, "a.png"), []byte("\x89PNG\r\n\x1a\nbroken"), 0o644)
	blocker := filepath.Join(tmp, "file")
	os.WriteFile(blocker, nil, 0o644)
	// A run whose configuration no longer matches its checkpoints.
	changed := tinyRun(t)
	cfgPath := filepath.Join(changed, "config.json")
	b, _ := os.ReadFile(cfgPath)
	os.WriteFile(cfgPath, bytes.Replace(b, []byte(`"base_channels": 16`), []byte(`"base_channels": 8`), 1), 0o644)

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing data", []string{"train", "--data", filepath.Join(tmp, "nope"), "--preset", "tiny"}, "no such file"},
		{"corrupt idx", []string{"train", "--data", notIDX, "--preset", "tiny", "--out", filepath.Join(tmp, "r1")}, "truncated"},
		{"corrupt png", []string{"train", "--data", corruptPNG, "--preset", "tiny", "--out", filepath.Join(tmp, "r2")}, "a.png"},
		{"not a checkpoint", []string{"sample", "--checkpoint", filepath.Join(tmp, "text.safetensors")}, "invalid safetensors"},
		{"truncated checkpoint", []string{"sample", "--checkpoint", filepath.Join(tmp, "cut.safetensors")}, "truncated"},
		{"checkpoint of another config", []string{"train", "--resume", changed, "--steps", "20"}, "do not fit"},
		{"steps above T", []string{"sample", "--run", runDir, "--steps", "5000"}, "out of range [1, 1000]"},
		{"guidance unconditional", []string{"sample", "--run", runDir, "--guidance", "2", "--class", "0"}, "unconditional"},
		{"unknown device", []string{"sample", "--run", runDir, "--device", "tpu"}, "unknown device"},
		{"unwritable output", []string{"sample", "--run", runDir, "--out", filepath.Join(blocker, "sub", "g.png")}, "cannot write"},
		{"unknown preset", []string{"train", "--preset", "huge"}, "unknown U-Net preset"},
		{"bad eta", []string{"sample", "--run", runDir, "--eta", "2"}, "out of range [0, 1]"},
		{"no model", []string{"sample"}, "--run"},
		{"resume non-run", []string{"train", "--resume", tmp}, "run directory"},
		{"bad batch", []string{"train", "--preset", "tiny", "--batch", "0", "--data", tmp}, "--batch 0 must be positive"},
		// Counts that would run out of memory or hang, and values that
		// would fail after training or be ignored, are refused at start-up.
		{"huge final eval", []string{"train", "--preset", "tiny", "--final-eval", "100000000", "--out", filepath.Join(tmp, "r3")}, "--final-eval 100000000 out of range [0, 1048576]"},
		{"huge eval n", []string{"train", "--preset", "tiny", "--eval-every", "1", "--eval-n", "100000000", "--out", filepath.Join(tmp, "r3")}, "--eval-n 100000000 out of range"},
		{"negative eval n", []string{"train", "--preset", "tiny", "--eval-every", "1", "--eval-n", "-1", "--out", filepath.Join(tmp, "r3")}, "--eval-n -1 out of range"},
		{"huge threads", []string{"train", "--preset", "tiny", "--threads", "100000", "--out", filepath.Join(tmp, "r3")}, "--threads 100000 out of range [0, 1024]"},
		{"huge res blocks", []string{"train", "--preset", "tiny", "--res-blocks", "100000", "--out", filepath.Join(tmp, "r3")}, "invalid U-Net config: 2 levels of 100000 residual blocks: at most 12 levels of 64"},
		{"infinite weight decay", []string{"train", "--preset", "tiny", "--weight-decay", "inf", "--out", filepath.Join(tmp, "r3")}, "--weight-decay +Inf: want a finite number"},
		{"infinite grad clip", []string{"train", "--preset", "tiny", "--grad-clip", "inf", "--out", filepath.Join(tmp, "r3")}, "--grad-clip +Inf"},
		{"infinite min snr", []string{"train", "--preset", "tiny", "--min-snr", "inf", "--out", filepath.Join(tmp, "r3")}, "--min-snr +Inf"},
		{"NaN dropout", []string{"train", "--preset", "tiny", "--dropout", "NaN", "--out", filepath.Join(tmp, "r3")}, "--dropout NaN out of range [0, 1)"},
		{"autoencoder zero lr", []string{"train-autoencoder", "--lr", "0", "--out", filepath.Join(tmp, "r3")}, "--lr 0 must be positive"},
		{"autoencoder negative warmup", []string{"train-autoencoder", "--warmup", "-1", "--out", filepath.Join(tmp, "r3")}, "--warmup -1 must be non-negative"},
		{"zero terminal snr epsilon", []string{"train", "--preset", "tiny", "--zero-terminal-snr", "--out", filepath.Join(tmp, "r3")}, "--zero-terminal-snr needs --target v or x0"},
		{"autoencoder huge eval", []string{"train-autoencoder", "--eval-n", "100000000", "--out", filepath.Join(tmp, "r3")}, "--eval-n 100000000 out of range [0, 1048576]"},
		{"stray argument", []string{"sample", "--run", runDir, "--steps", "2", "oops", "-n", "1"}, `unexpected argument "oops"`},
		{"eta without ddim", []string{"sample", "--run", runDir, "--eta", "0.7"}, "--eta is for --sampler ddim, and the sampler is dpmpp-2m"},
		{"variance without ddpm", []string{"eval", "--run", runDir, "--sampler", "ddim", "--variance", "fixed-large"}, "--variance is for --sampler ddpm"},
		{"huge guidance", []string{"sample", "--run", runDir, "--guidance", "1e308", "--class", "0"}, "--guidance 1e+308 out of range [0, 50]"},
		{"unwritable cache", []string{"eval", "--run", runDir, "--n", "4", "--steps", "2", "--cache-dir", filepath.Join(blocker, "sub")}, "--cache-dir"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, errOut := ddpm(t, append(c.args, "--quiet")...)
			if code != 1 || !strings.HasPrefix(errOut, "ddpm: ") || !strings.Contains(errOut, c.want) ||
				strings.Count(strings.TrimSpace(errOut), "\n") != 0 || strings.Contains(errOut, "goroutine") {
				t.Errorf("exit %d, stderr %q; want one line containing %q", code, errOut, c.want)
			}
		})
	}
}

// Ctrl-C during training writes a checkpoint and exits 0 with the resume
// command. This runs the real binary, since it is about signals.
func TestInterruptSavesCheckpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "bin", "ddpm")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dataDir, runDir := t.TempDir(), filepath.Join(t.TempDir(), "run")
	writeIDX(t, dataDir, 48)
	cmd := exec.Command(bin, "train", "--preset", "tiny", "--data", dataDir, "--steps", "100000", "--batch", "8",
		"--checkpoint-every", "100000", "--sample-every", "0", "--out", runDir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "train ") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 || !strings.Contains(out.String(), "resume with: ddpm train --resume "+runDir) {
		t.Fatalf("exit %d (want 130, as shells expect after Ctrl-C), output:\n%s", code, out.String())
	}
	entries, _ := filepath.Glob(filepath.Join(runDir, "ckpt-*.safetensors"))
	if len(entries) != 1 {
		t.Fatalf("checkpoints after Ctrl-C: %v", entries)
	}
}

func TestVersion(t *testing.T) {
	code, out, errOut := ddpm(t, "version")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := []string{"libtorch  " + torch.Version(), "cuda ", "threads   ", "kernels   "}
	if v := torch.ConvKernelVectors(); v != "" {
		want = append(want, "kernels   "+v+" ")
	}
	if blas := torch.BLAS(); blas != "" {
		want = append(want, "blas      "+blas+"\n")
	}
	for _, want := range want {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}
}

// Flags that would silently do something other than asked are refused.
func TestRefusesSurprises(t *testing.T) {
	run := tinyRun(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"sample", "--run", run, "--class", "-2", "--out", filepath.Join(t.TempDir(), "x.png")}, "--class -2"},
		{[]string{"train", "--preset", "tiny", "--steps", "2", "--out", run, "-q"}, "already holds a run"},
		{[]string{"train", "--resume", run, "--steps", "5", "-q"}, "past --steps 5"},
		{[]string{"train", "--resume", run, "--preset", "small", "-q"}, "--preset cannot change a run on --resume"},
		{[]string{"train", "--resume", run, "--out", t.TempDir(), "-q"}, "--out cannot change"},
		{[]string{"train", "--preset", "tiny", "--image-size", "2048", "--out", filepath.Join(t.TempDir(), "r"), "-q"}, "--image-size 2048 out of range"},
		{[]string{"info", "--model", t.TempDir(), "--run", run}, "give --model or --run, not both"},
		{[]string{"info", "--checkpoint", filepath.Join(run, "ckpt-00000012.safetensors"), "--run", run}, "give --run or --checkpoint, not both"},
	} {
		code, _, errOut := ddpm(t, c.args...)
		if code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("ddpm %v: exit %d, %q; want an error with %q", c.args, code, errOut, c.want)
		}
	}
}

// A resumed run reads as one run: records past its checkpoint and a line
// cut short by a crash are dropped, and temporary files a killed write
// left behind are removed.
func TestResumeRepairsTheRunDirectory(t *testing.T) {
	run := tinyRun(t)
	f, err := os.OpenFile(filepath.Join(run, metricsFile), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"step":99,"loss":1}` + "\n" + `{"step":1`)
	f.Close()
	stale := filepath.Join(run, ".ckpt-00000013.safetensors.tmp-12345")
	if err := os.WriteFile(stale, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := ddpm(t, "train", "--resume", run, "--steps", "15", "-q"); code != 0 {
		t.Fatalf("resume: exit %d\n%s%s", code, out, errOut)
	}
	records, err := readMetrics(filepath.Join(run, metricsFile))
	if err != nil {
		t.Fatal(err)
	}
	var steps []int64
	for _, m := range records {
		steps = append(steps, m.Step)
	}
	if fmt.Sprint(steps) != "[3 6 9 12 15]" {
		t.Errorf("metrics steps after resume %v, want [3 6 9 12 15]", steps)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("the stale temporary checkpoint is still there")
	}
}

// A --config file with a typo, or with nothing in it, is refused naming the
// file and the key.
func TestConfigFileKeys(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ body, want string }{
		{"stpes: 10\n", `unknown key "stpes"`},
		{"", "sets nothing"},
	} {
		path := filepath.Join(dir, "c.yaml")
		os.WriteFile(path, []byte(c.body), 0o644)
		code, _, errOut := ddpm(t, "train", "--config", path, "--out", filepath.Join(dir, "run"), "-q")
		if code == 0 || !strings.Contains(errOut, c.want) || !strings.Contains(errOut, path) {
			t.Errorf("config %q: exit %d, %q; want %q", c.body, code, errOut, c.want)
		}
	}
	path := filepath.Join(dir, "ok.yaml")
	os.WriteFile(path, []byte("preset: tiny\nsteps: 2\nbatch: 2\nsample-every: 0\nsample-n: 1\n"), 0o644)
	data := t.TempDir()
	writeIDX(t, data, 8)
	if code, out, errOut := ddpm(t, "train", "--config", path, "--data", data, "--out", filepath.Join(dir, "run2"), "-q"); code != 0 {
		t.Errorf("a valid config file: exit %d\n%s%s", code, out, errOut)
	}
}

// A bad flag, environment value, command or stray argument is one line on
// stderr, not the help.
func TestUsageErrorsAreOneLine(t *testing.T) {
	t.Setenv("DDPM_STEPS", "abc")
	for _, args := range [][]string{{"train", "--stpes", "3"}, {"train", "-q"}, {"sample", "--bogus"}, {"frobnicate"},
		{"sample", "--n", "1", "oops", "--out", "q.png"}, {"version", "extra"}, {"serve", "--", "--addr", "x"}} {
		code, out, errOut := ddpm(t, args...)
		if code != 1 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "--help") {
			t.Errorf("ddpm %v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
}

// Resume falls back from a truncated newest checkpoint to the one before;
// a run directory in use by another training is refused; a non-PNG output
// name is refused before sampling.
func TestRunDirectoryFaults(t *testing.T) {
	run := tinyRun(t) // checkpoints at steps 6 and 12
	newest := filepath.Join(run, "ckpt-00000012.safetensors")
	b, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(newest, b[:len(b)/2], 0o644)
	code, out, errOut := ddpm(t, "train", "--resume", run, "--steps", "14")
	if code != 0 || !strings.Contains(out, "skipped an unreadable checkpoint") || !strings.Contains(out, "resumed from "+filepath.Join(run, "ckpt-00000006.safetensors")) {
		t.Errorf("resume past a truncated checkpoint: exit %d\n%s%s", code, out, errOut)
	}
	unlock, err := lockRunDir(run)
	if err != nil {
		t.Fatal(err)
	}
	code, _, errOut = ddpm(t, "train", "--resume", run, "--steps", "16", "-q")
	unlock()
	if code == 0 || !strings.Contains(errOut, "another ddpm train is writing") {
		t.Errorf("a locked run: exit %d, %s", code, errOut)
	}
	if code, _, errOut := ddpm(t, "sample", "--run", run, "--out", filepath.Join(t.TempDir(), "x.jpg")); code == 0 || !strings.Contains(errOut, ".png") {
		t.Errorf("--out x.jpg: exit %d, %s", code, errOut)
	}
}

// A --config file may give an integer for a float flag (lr: 1), and a key
// the file cannot set (out, resume) or a value of the wrong type is one line
// starting with the file and naming the key: out used to be dropped without
// a word, a wrong type was altsrc's message without the file, and every
// config error came wrapped in altsrc's "Unable to create input source".
func TestConfigFileValues(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ body, want string }{
		{"out: elsewhere\n", `key "out" can only be given on the command line (--out)`},
		{"steps: many\n", `key "steps" wants an integer, not "many"`},
		{"lr: 1\nema-decay: 2\n", "--ema-decay 2 out of range"},
	} {
		path := filepath.Join(dir, "c.yaml")
		os.WriteFile(path, []byte(c.body), 0o644)
		code, out, errOut := ddpm(t, "train", "--config", path, "--out", filepath.Join(dir, "run"), "-q")
		if code != 1 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, c.want) ||
			(c.want[0] == 'k' && !strings.HasPrefix(errOut, "ddpm: config file "+path+": ")) {
			t.Errorf("config %q: exit %d, %q%q; want one line with %q", c.body, code, out, errOut, c.want)
		}
	}
}

// Training on the CPU is bit-reproducible: two identical runs, and a run
// resumed halfway, end with the same bytes in every tensor. The runs used
// to drift apart (about 1e-8 after 15 to 60 steps) when the training
// goroutine moved between OS threads; a goroutine forcing collections makes
// such moves likely.
func TestTrainingIsBitReproducible(t *testing.T) {
	data := t.TempDir()
	writeIDX(t, data, 64)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				runtime.GC()
			}
		}
	}()
	dir := t.TempDir()
	common := []string{"--preset", "tiny", "--data", data, "--threads", "1", "--seed", "3", "--batch", "8",
		"--checkpoint-every", "6", "--sample-every", "0", "--sample-n", "1", "-q"}
	final := func(name string) map[string][]byte {
		_, tensors, err := safetensors.Read(filepath.Join(dir, name, "ckpt-00000024.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		return tensors
	}
	for _, args := range [][]string{
		append([]string{"train", "--steps", "24", "--out", filepath.Join(dir, "a")}, common...),
		append([]string{"train", "--steps", "24", "--out", filepath.Join(dir, "b")}, common...),
		append([]string{"train", "--steps", "12", "--out", filepath.Join(dir, "c")}, common...),
		{"train", "--resume", filepath.Join(dir, "c"), "--steps", "24", "--threads", "1", "-q"},
	} {
		if code, out, errOut := ddpm(t, args...); code != 0 {
			t.Fatalf("ddpm %v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	a := final("a")
	for _, other := range []string{"b", "c"} {
		differ := 0
		for name, v := range final(other) {
			if !bytes.Equal(v, a[name]) {
				differ++
			}
		}
		if differ > 0 {
			t.Errorf("run %s: %d of %d tensors differ from run a", other, differ, len(a))
		}
	}
}

// --dist-timeout is checked in every run, not only in distributed ones: a
// zero timeout used to start a single-process training.
func TestDistTimeoutChecked(t *testing.T) {
	code, out, errOut := ddpm(t, "train", "--preset", "tiny", "--dist-timeout", "0s", "--out", filepath.Join(t.TempDir(), "run"))
	if code != 1 || out != "" || errOut != "ddpm: --dist-timeout 0s must be positive\n" {
		t.Errorf("exit %d, %q%q", code, out, errOut)
	}
}

// Environment variables that libtorch or the shim would read in a form they
// cannot use are refused before any command (libtorch printed a C++
// exception for OMP_NUM_THREADS=0 and went on; the cache sizes were
// ignored without a word).
func TestEnvironmentChecked(t *testing.T) {
	for _, c := range []struct{ name, value, want string }{
		{"OMP_NUM_THREADS", "0", `OMP_NUM_THREADS="0"`},
		{"OMP_NUM_THREADS", "-3", "want a positive number of threads"},
		{"OMP_NUM_THREADS", "4,x", `OMP_NUM_THREADS="4,x"`},
		{"MKL_NUM_THREADS", "x", `MKL_NUM_THREADS="x"`},
		{"DDPM_CPU_CACHE_MB", "abc", `DDPM_CPU_CACHE_MB="abc": want a size in MiB`},
		{"DDPM_CPU_CACHE_MB", "-5", `DDPM_CPU_CACHE_MB="-5"`},
		{"DDPM_WEIGHT_CACHE_MB", "abc", `DDPM_WEIGHT_CACHE_MB="abc"`},
	} {
		env := map[string]string{c.name: c.value}
		err := checkEnvironment(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s=%q: %v, want an error with %q", c.name, c.value, err, c.want)
		}
	}
	// Empty is unset, and OpenMP allows white space around the counts.
	for _, valid := range []map[string]string{
		{"OMP_NUM_THREADS": "4,2", "MKL_NUM_THREADS": "1", "DDPM_CPU_CACHE_MB": "0", "DDPM_WEIGHT_CACHE_MB": ""},
		{"OMP_NUM_THREADS": " 4 ", "MKL_NUM_THREADS": ""},
	} {
		if err := checkEnvironment(func(k string) (string, bool) { v, ok := valid[k]; return v, ok }); err != nil {
			t.Errorf("valid settings %q: %v", valid, err)
		}
	}
	t.Setenv("DDPM_CPU_CACHE_MB", "abc")
	if code, out, errOut := ddpm(t, "version"); code != 1 || out != "" || !strings.HasPrefix(errOut, "ddpm: environment: DDPM_CPU_CACHE_MB") ||
		strings.Count(errOut, "\n") != 1 {
		t.Errorf("ddpm version with DDPM_CPU_CACHE_MB=abc: exit %d, %q%q", code, out, errOut)
	}
}
