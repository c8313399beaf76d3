package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/unet"
	"github.com/ddpm-go/ddpm/torch"
)

// benchJSON runs bench --json with args and decodes what it prints.
func benchJSON(t *testing.T, args ...string) benchResult {
	t.Helper()
	code, out, errOut := ddpm(t, append([]string{"bench", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("bench failed (%d): %s", code, errOut)
	}
	var r benchResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %q", err, out)
	}
	return r
}

// bench --profile times libtorch's operators in both steps: the denoising
// step calls aten::conv2d once per convolution of the model, and the
// training step runs backward functions too. Without --profile there is no
// profile.
func TestBenchProfile(t *testing.T) {
	r := benchJSON(t, "--preset", "tiny", "--batch", "2", "--iters", "2", "--warmup", "0", "--profile")
	cfg, _ := unet.Preset("tiny")
	model, err := unet.New(cfg, torch.CPU, torch.Float32, nil)
	if err != nil {
		t.Fatal(err)
	}
	convs := 0
	for _, p := range model.Params() {
		if len(p.T.Shape()) == 4 {
			convs++
		}
	}
	model.Close()
	rows := map[string]opRow{}
	for _, row := range r.SampleProfile {
		rows[row.Name] = row
	}
	if got := rows["aten::conv2d"].Calls; got != float64(convs) {
		t.Errorf("denoising step: %g aten::conv2d calls a step, want %d (the model's convolutions)", got, convs)
	}
	backward := false
	for _, row := range r.TrainProfile {
		backward = backward || strings.HasSuffix(row.Name, "Backward0") || strings.HasSuffix(row.Name, "_backward")
		if !(row.SelfMS >= 0 && row.SelfMS <= row.TotalMS && row.Calls > 0) {
			t.Errorf("training step row %+v", row)
		}
	}
	if !backward {
		t.Errorf("training step profile has no backward operator: %+v", r.TrainProfile)
	}

	code, out, errOut := ddpm(t, "bench", "--preset", "tiny", "--batch", "2", "--iters", "1", "--warmup", "0", "--profile")
	if code != 0 || !strings.Contains(out, "training step: ") || !strings.Contains(out, "denoising step: ") ||
		!strings.Contains(out, "aten::") || !strings.Contains(out, "other operators") {
		t.Errorf("bench --profile: exit %d, stdout %q, stderr %q; want two tables of operators", code, out, errOut)
	}
	code, out, _ = ddpm(t, "bench", "--preset", "tiny", "--batch", "2", "--iters", "1", "--warmup", "0", "--json")
	if code != 0 || strings.Contains(out, "profile") {
		t.Errorf("bench without --profile: exit %d, %q; want no profile", code, out)
	}
}
