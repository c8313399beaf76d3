package main

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/torch/safetensors"
)

// export --format checkpoint writes a file that samples exactly like the
// run it came from (float32), a quarter of the checkpoint's size; bf16 and
// fp16 halve it again and still sample; bad uses, and weights sample would
// refuse, get one line.
func TestExportWeights(t *testing.T) {
	run := tinyRun(t)
	dir := t.TempDir()
	sample := func(name string, args ...string) []byte {
		t.Helper()
		out := filepath.Join(dir, name+".png")
		args = append([]string{"sample", "--n", "4", "--steps", "4", "--seed", "5", "--out", out, "-q"}, args...)
		if code, _, errOut := ddpm(t, args...); code != 0 {
			t.Fatalf("sample %v: %s", args, errOut)
		}
		b, _ := os.ReadFile(out)
		return b
	}
	want := sample("run", "--run", run)
	ckpt := filepath.Join(run, "ckpt-00000012.safetensors")
	full, _ := os.Stat(ckpt)
	for _, dt := range []string{"float32", "bf16", "fp16"} {
		path := filepath.Join(dir, dt+".safetensors")
		code, out, errOut := ddpm(t, "export", "--run", run, "--format", "checkpoint", "--dtype", dt, "--out", path)
		if code != 0 || !strings.Contains(out, "ddpm: wrote "+path) {
			t.Fatalf("export --dtype %s: exit %d\n%s%s", dt, code, out, errOut)
		}
		st, _ := os.Stat(path)
		got := sample(dt, "--checkpoint", path)
		switch dt {
		case "float32":
			if ratio := float64(st.Size()) / float64(full.Size()); ratio > 0.3 {
				t.Errorf("float32 weights file is %.2f of the checkpoint's size", ratio)
			}
			if !bytes.Equal(got, want) {
				t.Error("the float32 weights file samples another image than its run")
			}
		default:
			if ratio := float64(st.Size()) / float64(full.Size()); ratio > 0.15 {
				t.Errorf("%s weights file is %.2f of the checkpoint's size", dt, ratio)
			}
		}
		if code, out, _ := ddpm(t, "info", "--checkpoint", path); code != 0 || !strings.Contains(out, "tiny") && !strings.Contains(out, "base") {
			t.Errorf("info --checkpoint %s: exit %d\n%s", dt, code, out)
		}
	}
	slim := filepath.Join(dir, "float32.safetensors")
	if code, _, errOut := ddpm(t, "sample", "--checkpoint", slim, "--weights", "model", "--n", "1", "--out", filepath.Join(dir, "m.png")); code == 0 || !strings.Contains(errOut, "try the other --weights") {
		t.Errorf("--weights model of an EMA weights file: exit %d, %q", code, errOut)
	}
	// The checkpoint with its EMA weights made NaN, which sample refuses.
	h, err := safetensors.ReadHeader(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(ckpt)
	for _, e := range h.Entries {
		if strings.HasPrefix(e.Name, "ema.") && e.DType == safetensors.F32 {
			for i := h.DataStart + e.Begin; i < h.DataStart+e.End; i += 4 {
				binary.LittleEndian.PutUint32(b[i:], math.Float32bits(float32(math.NaN())))
			}
			break
		}
	}
	nan := filepath.Join(dir, "nan.safetensors")
	os.WriteFile(nan, b, 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--format", "checkpoint", "--out", filepath.Join(dir, "float32.safetensors")}, "exists; nothing was written"},
		{nil, "--out is required"},
		{[]string{"--out", ""}, "--out is required"},
		{[]string{"--format", "checkpoint", "--out", ""}, "--out is required"},
		{[]string{"--format", "checkpoint", "--out", filepath.Join(dir, "x.png")}, "writes a .safetensors file"},
		{[]string{"--checkpoint", nan, "--out", filepath.Join(dir, "nan")}, "not finite"},
		{[]string{"--checkpoint", nan, "--format", "checkpoint", "--out", filepath.Join(dir, "nan2.safetensors")}, "not finite"},
		{[]string{"--format", "checkpoint", "--dtype", "int64", "--out", filepath.Join(dir, "x.safetensors")}, "--dtype \"int64\": want float32, bf16 or fp16"},
		{[]string{"--dtype", "bf16", "--out", filepath.Join(dir, "folder")}, "--dtype is for --format checkpoint"},
		{[]string{"--format", "onnx", "--out", filepath.Join(dir, "y")}, "export writes diffusers or checkpoint"},
	} {
		args := append([]string{"export", "--run", run}, c.args...)
		if slices.Contains(c.args, "--checkpoint") {
			args = append([]string{"export"}, c.args...)
		}
		code, _, errOut := ddpm(t, args...)
		if code == 0 || !strings.Contains(errOut, c.want) || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("export %v: exit %d, %q; want one line with %q", c.args, code, errOut, c.want)
		}
	}
}
