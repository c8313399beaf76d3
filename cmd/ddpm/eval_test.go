package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/features"
	"github.com/ddpm-go/ddpm/internal/inceptiontest"
)

// evalRun is a tiny training run whose data folder also holds a test split
// (a copy of the training files), with a private cache directory and no
// Inception network from the environment.
type evalRun struct {
	run, data, cache string
}

func newEvalRun(t *testing.T) evalRun {
	t.Helper()
	t.Setenv(features.InceptionEnv, "")
	cache := t.TempDir()
	t.Setenv(features.CacheDirEnv, cache)
	run := tinyRun(t)
	b, err := os.ReadFile(filepath.Join(run, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg runConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	return evalRun{run: run, data: cfg.Data, cache: cache}
}

// addTestSplit copies the training files of the data folder to the names
// of a test split.
func (r evalRun) addTestSplit(t *testing.T) {
	t.Helper()
	for _, kind := range []string{"images-idx3", "labels-idx1"} {
		b, err := os.ReadFile(filepath.Join(r.data, "train-"+kind+"-ubyte.gz"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(r.data, "t10k-"+kind+"-ubyte.gz"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// metricLines parses "name value [± std]" lines.
func metricLines(t *testing.T, out string) map[string]string {
	t.Helper()
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || m[name] != "" {
			t.Fatalf("bad or repeated metric line %q in:\n%s", sc.Text(), out)
		}
		m[name] = value
	}
	return m
}

func number(t *testing.T, m map[string]string, name string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(strings.Fields(m[name])[0], 64)
	if err != nil {
		t.Fatalf("%s: %q: %v", name, m[name], err)
	}
	return v
}

func TestEvalScoresARun(t *testing.T) {
	r := newEvalRun(t)
	r.addTestSplit(t)
	args := []string{"eval", "--run", r.run, "--n", "12", "--steps", "3", "--kid-subsets", "4", "--quiet"}
	code, out, errOut := ddpm(t, args...)
	if code != 0 {
		t.Fatalf("eval: %d %s", code, errOut)
	}
	m := metricLines(t, out)
	if len(m) != 4 || m["fid-classifier"] == "" || !strings.Contains(m["kid-classifier"], " ± ") || m["classifier-accuracy"] == "" {
		t.Fatalf("output:\n%s", out)
	}
	if fid := number(t, m, "fid-classifier"); !(fid >= 0) {
		t.Errorf("fid-classifier %v", fid)
	}
	if acc := number(t, m, "classifier-accuracy"); acc < 0 || acc > 1 {
		t.Errorf("classifier-accuracy %v", acc)
	}
	total := 0
	for _, f := range strings.Fields(m["class-histogram"]) {
		_, count, _ := strings.Cut(f, ":")
		k, _ := strconv.Atoi(count)
		total += k
	}
	if len(strings.Fields(m["class-histogram"])) != 3 || total != 12 {
		t.Errorf("class-histogram %q: want 3 classes, 12 images", m["class-histogram"])
	}
	if !strings.Contains(errOut, "training the feature classifier") ||
		!strings.Contains(errOut, "inception metrics skipped") || !strings.Contains(errOut, "inception-2015-12-05.pt") ||
		!strings.Contains(errOut, filepath.Join(r.cache, "inception-2015-12-05.pt")) {
		t.Errorf("notes:\n%s", errOut)
	}
	// The second time the classifier comes from the cache, and the scores
	// are the same.
	code, again, errOut := ddpm(t, args...)
	if code != 0 || again != out || strings.Contains(errOut, "training the feature classifier") {
		t.Errorf("second eval (%d):\n%s\nfirst:\n%s\nnotes:\n%s", code, again, out, errOut)
	}
	code, js, errOut := ddpm(t, append(args, "--json")...)
	var res map[string]any
	if code != 0 || json.Unmarshal([]byte(js), &res) != nil || res["n"] != float64(12) ||
		strconv.FormatFloat(res["fid_classifier"].(float64), 'f', 4, 64) != m["fid-classifier"] ||
		res["class_histogram"] == nil || res["fid_inception"] != nil {
		t.Errorf("--json (%d): %s %s", code, js, errOut)
	}
}

func TestEvalWithInceptionStandIn(t *testing.T) {
	r := newEvalRun(t)
	fix := inceptiontest.Write(t, 64)
	stats := filepath.Join(t.TempDir(), "ref.npz")
	args := []string{"eval", "--run", r.run, "--n", "10", "--steps", "3", "--kid-subsets", "3", "--quiet",
		"--inception", fix.Path, "--inception-dim", "64"}
	code, out, errOut := ddpm(t, append(args, "--write-ref-stats", stats)...)
	if code != 0 {
		t.Fatalf("eval: %d %s", code, errOut)
	}
	m := metricLines(t, out)
	for _, name := range []string{"fid-classifier", "kid-classifier", "class-histogram", "fid-inception", "kid-inception", "inception-score"} {
		if m[name] == "" {
			t.Errorf("no %s in:\n%s", name, out)
		}
	}
	if m["classifier-accuracy"] != "" || !strings.Contains(errOut, "no test split") {
		t.Errorf("accuracy without a test split: %q; notes %s", m["classifier-accuracy"], errOut)
	}
	if is := number(t, m, "inception-score"); is < 1 {
		t.Errorf("inception-score %v < 1", is)
	}
	// The written statistics give the same FID.
	code, out2, errOut := ddpm(t, append(args, "--ref-stats", stats)...)
	m2 := metricLines(t, out2)
	if code != 0 || m2["fid-inception"] != m["fid-inception"] || m2["kid-inception"] != "" || m2["fid-classifier"] != m["fid-classifier"] {
		t.Errorf("with --ref-stats (%d):\n%s\nwithout:\n%s\n%s", code, out2, out, errOut)
	}
	// The statistics alone, without a model.
	alone := filepath.Join(t.TempDir(), "alone.npz")
	code, out3, errOut := ddpm(t, "eval", "--ref", r.data, "--image-size", "16", "--quiet", "--inception", fix.Path,
		"--inception-dim", "64", "--write-ref-stats", alone)
	if code != 0 || out3 != "" || !strings.Contains(errOut, "wrote "+alone) {
		t.Errorf("--write-ref-stats alone (%d): %q %s", code, out3, errOut)
	}
	a, _ := os.ReadFile(stats)
	b, _ := os.ReadFile(alone)
	if len(a) == 0 || string(a) != string(b) {
		t.Error("the statistics written with and without a model differ")
	}
}

func TestEvalImagesAndFloor(t *testing.T) {
	r := newEvalRun(t)
	dir := t.TempDir()
	if code, _, errOut := ddpm(t, "sample", "--run", r.run, "--steps", "3", "--n", "6", "--out", "", "--out-dir", dir, "--quiet"); code != 0 {
		t.Fatal(errOut)
	}
	code, out, errOut := ddpm(t, "eval", "--images", dir, "--ref", r.data, "--image-size", "16", "--kid-subsets", "2", "--quiet")
	m := metricLines(t, out)
	if code != 0 || m["fid-classifier"] == "" || m["kid-classifier"] == "" {
		t.Fatalf("--images (%d):\n%s\n%s", code, out, errOut)
	}
	r.addTestSplit(t)
	code, out, errOut = ddpm(t, "eval", "--floor", "--ref", r.data, "--image-size", "16", "--n", "20", "--kid-subsets", "2", "--quiet")
	m = metricLines(t, out)
	if code != 0 || m["fid-classifier"] == "" || m["classifier-accuracy"] == "" || !strings.Contains(errOut, "20 test images") {
		t.Fatalf("--floor (%d):\n%s\n%s", code, out, errOut)
	}
	// The test split is a copy of the training set here: the floor is ~0.
	if fid := number(t, m, "fid-classifier"); fid > 5 {
		t.Errorf("floor %v with identical splits", fid)
	}
}

func TestEvalErrors(t *testing.T) {
	r := newEvalRun(t)
	tmp := t.TempDir()
	missing := filepath.Join(tmp, "inception-2015-12-05.pt")
	junk := filepath.Join(tmp, "junk.npz")
	os.WriteFile(junk, []byte("not a zip"), 0o644)
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"missing inception", []string{"--run", r.run, "--inception", missing}, []string{missing, "inception-2015-12-05.pt", features.InceptionURL, "--inception FILE", "DDPM_INCEPTION"}},
		{"nothing to score", nil, []string{"what to score"}},
		{"floor with a model", []string{"--floor", "--run", r.run}, []string{"--floor"}},
		{"floor without a test split", []string{"--floor", "--ref", r.data, "--image-size", "16"}, []string{"test split"}},
		{"ref stats without inception", []string{"--run", r.run, "--ref-stats", junk}, []string{"--ref-stats", "inception-2015-12-05.pt"}},
		{"write stats without inception", []string{"--run", r.run, "--write-ref-stats", filepath.Join(tmp, "s.npz")}, []string{"--write-ref-stats", "inception-2015-12-05.pt"}},
		{"both stats flags", []string{"--run", r.run, "--ref-stats", junk, "--write-ref-stats", junk}, []string{"not both"}},
		{"bad n", []string{"--run", r.run, "--n", "1"}, []string{"--n 1"}},
		{"missing images", []string{"--images", filepath.Join(tmp, "none"), "--ref", r.data}, []string{"none"}},
		{"missing training data", []string{"--checkpoint", filepath.Join(r.run, "ckpt-00000012.safetensors"), "--ref", filepath.Join(tmp, "gone")}, []string{"gone"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, errOut := ddpm(t, append(append([]string{"eval"}, c.args...), "--quiet")...)
			if code != 1 || !strings.HasPrefix(errOut, "ddpm: ") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Fatalf("exit %d, stderr %q; want one error line", code, errOut)
			}
			for _, w := range c.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q lacks %q", errOut, w)
				}
			}
		})
	}
	// A bad statistics file is reported with an Inception network at hand.
	fix := inceptiontest.Write(t, 64)
	code, _, errOut := ddpm(t, "eval", "--run", r.run, "--n", "4", "--steps", "2", "--inception", fix.Path, "--inception-dim", "64",
		"--ref-stats", junk, "--quiet")
	if code != 1 || !strings.Contains(errOut, junk) {
		t.Errorf("bad --ref-stats: %d %q", code, errOut)
	}
}

// --eval-every logs the offline FID into the metrics log.
func TestTrainLogsOfflineFID(t *testing.T) {
	cache := t.TempDir()
	t.Setenv(features.CacheDirEnv, cache)
	run := tinyRun(t, "--eval-every", "6", "--eval-n", "8")
	b, err := os.ReadFile(filepath.Join(run, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var rec struct {
			Step  int64              `json:"step"`
			Extra map[string]float64 `json:"extra"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		fid, ok := rec.Extra["fid_classifier"]
		if ok != (rec.Step%6 == 0) || (ok && !(fid >= 0)) {
			t.Errorf("step %d: extra %v", rec.Step, rec.Extra)
		}
		if ok {
			found++
		}
	}
	if found != 2 {
		t.Errorf("%d records with fid_classifier, want 2:\n%s", found, b)
	}
	if m, _ := filepath.Glob(filepath.Join(cache, "classifiers", "*.safetensors")); len(m) != 1 {
		t.Errorf("cached classifiers: %v", m)
	}
}

// The score a class-conditional run prints after training is what the
// eval command it names prints: the same seed and the classes in turn.
func TestFinalEvalIsReproducible(t *testing.T) {
	t.Setenv(features.InceptionEnv, "")
	t.Setenv(features.CacheDirEnv, t.TempDir())
	dataDir, runDir := t.TempDir(), filepath.Join(t.TempDir(), "run")
	writeIDX(t, dataDir, 48)
	code, out, errOut := ddpm(t, "train", "--preset", "tiny", "--data", dataDir, "--classes", "--seed", "5", "--steps", "4",
		"--batch", "8", "--final-eval", "12", "--out", runDir, "--quiet")
	if code != 0 {
		t.Fatalf("train: %d %s%s", code, out, errOut)
	}
	all := out + errOut
	i := strings.Index(all, "ddpm: fid-classifier ")
	if i < 0 {
		t.Fatalf("no final score in:\n%s", all)
	}
	line, _, _ := strings.Cut(all[i:], "\n")
	printed := strings.Fields(line)[2]
	cmd := strings.Fields(line[strings.Index(line, "ddpm eval ")+len("ddpm "):])
	cmd = cmd[:len(cmd)-3] // "measures it again)"
	if want := []string{"eval", "--run", runDir, "--n", "12", "--seed", "5"}; strings.Join(cmd, " ") != strings.Join(want, " ") {
		t.Fatalf("the final score names %q, want %q", cmd, want)
	}
	code, out, errOut = ddpm(t, append(cmd, "--quiet")...)
	if code != 0 {
		t.Fatalf("eval: %d %s%s", code, out, errOut)
	}
	if got := metricLines(t, out)["fid-classifier"]; got != printed {
		t.Errorf("eval printed fid-classifier %s, training %s", got, printed)
	}
}
