package features

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/torch"
)

func TestTrainClassifierSeparatesPatterns(t *testing.T) {
	train, test := patterns(300, 16, 1), patterns(150, 16, 2)
	o := quickTraining
	o.Test = test
	steps := 0
	o.OnProgress = func(p TrainProgress) {
		steps++
		if p.Step != steps || p.Steps != 4*10 || p.Epochs != 4 || p.Epoch != (p.Step-1)/10+1 {
			t.Errorf("progress %+v at call %d", p, steps)
		}
	}
	c, err := TrainClassifier(context.Background(), train, o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if steps != 40 {
		t.Errorf("%d progress calls, want 40", steps)
	}
	t.Logf("test accuracy %.3f", c.Info.Accuracy)
	if c.Info.AccuracyOn != "test" || c.Info.Accuracy < 0.9 {
		t.Errorf("accuracy %.3f on %q, want > 0.9 on test", c.Info.Accuracy, c.Info.AccuracyOn)
	}
	acc, err := c.Accuracy(context.Background(), test)
	if err != nil || acc != c.Info.Accuracy {
		t.Errorf("Accuracy = %v, %v; Info says %v", acc, err, c.Info.Accuracy)
	}
	if c.Dim() != 64 || c.Info.DataKey != ClassifierKey(train, o) || !slices.Equal(c.Info.ClassNames, train.ClassNames) {
		t.Errorf("dim %d, info %+v", c.Dim(), c.Info)
	}

	// Save and load give the same network.
	path := t.TempDir() + "/c.safetensors"
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	d, err := LoadClassifier(path, c.Device())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Config != c.Config || d.Info.DataKey != c.Info.DataKey || d.Info.Accuracy != c.Info.Accuracy ||
		d.Info.AccuracyOn != "test" || !slices.Equal(d.Info.ClassNames, train.ClassNames) || d.Info.Path != path {
		t.Errorf("loaded %+v %+v, saved %+v %+v", d.Config, d.Info, c.Config, c.Info)
	}
	want, _ := Extract(context.Background(), c, test, ExtractOptions{})
	got, _ := Extract(context.Background(), d, test, ExtractOptions{})
	if !slices.Equal(want.Features, got.Features) || !slices.Equal(want.Probs, got.Probs) {
		t.Error("the loaded classifier computes other features")
	}
}

func TestTrainClassifierIsDeterministic(t *testing.T) {
	train := patterns(60, 8, 1)
	o := TrainOptions{Epochs: 1, BatchSize: 16, Width: 8, Seed: 9}
	var feats [2][]float64
	for i := range feats {
		c, err := TrainClassifier(context.Background(), train, o)
		if err != nil {
			t.Fatal(err)
		}
		fs, err := Extract(context.Background(), c, train, ExtractOptions{Batch: 7})
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		feats[i] = fs.Features
	}
	if !slices.Equal(feats[0], feats[1]) {
		t.Error("two trainings with the same seed differ")
	}
}

func TestTrainClassifierRejectsBadData(t *testing.T) {
	unlabelled := patterns(12, 8, 1)
	unlabelled.Labels, unlabelled.NumClasses = nil, 0
	badLabel := patterns(12, 8, 1)
	badLabel.Labels[3] = 7
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name string
		ctx  context.Context
		ds   *data.Dataset
		o    TrainOptions
		want string
	}{
		{"unlabelled", context.Background(), unlabelled, TrainOptions{Epochs: 1}, "labelled"},
		{"label out of range", context.Background(), badLabel, TrainOptions{Epochs: 1}, "label 7"},
		{"negative epochs", context.Background(), patterns(12, 8, 1), TrainOptions{Epochs: -1}, "epochs"},
		{"cancelled", cancelled, patterns(12, 8, 1), TrainOptions{Epochs: 1}, "canceled"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := TrainClassifier(c.ctx, c.ds, c.o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestClassifierForCachesByData(t *testing.T) {
	dir := t.TempDir()
	train := patterns(60, 8, 1)
	o := TrainOptions{Epochs: 1, BatchSize: 16, Width: 8}
	steps := 0
	o.OnProgress = func(TrainProgress) { steps++ }
	c, err := ClassifierFor(context.Background(), train, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := Extract(context.Background(), c, train, ExtractOptions{})
	c.Close()
	path := ClassifierPath(dir, ClassifierKey(train, o))
	if steps == 0 || c.Info.Cached || c.Info.Path != path {
		t.Fatalf("first call: %d steps, info %+v", steps, c.Info)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	trained := steps
	c, err = ClassifierFor(context.Background(), train, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Extract(context.Background(), c, train, ExtractOptions{})
	c.Close()
	if steps != trained || !c.Info.Cached {
		t.Errorf("second call trained again (%d steps) or was not cached (%v)", steps-trained, c.Info.Cached)
	}
	if !slices.Equal(first.Features, again.Features) {
		t.Error("the cached classifier computes other features")
	}

	// A corrupt cache file is replaced.
	os.WriteFile(path, []byte("junk"), 0o644)
	c, err = ClassifierFor(context.Background(), train, dir, o)
	if err != nil || c.Info.Cached || steps != 2*trained {
		t.Errorf("corrupt cache: %v, cached %v, %d steps", err, c != nil && c.Info.Cached, steps-trained)
	}
	if c != nil {
		c.Close()
	}

	// The key follows the data and the recipe.
	key := ClassifierKey(train, o)
	pixel := patterns(60, 8, 1)
	pixel.Images[100] += 0.01
	label := patterns(60, 8, 1)
	label.Labels[5] = (label.Labels[5] + 1) % 3
	seed := o
	seed.Seed = 1
	for name, k := range map[string]string{
		"pixel": ClassifierKey(pixel, o), "label": ClassifierKey(label, o),
		"seed": ClassifierKey(train, seed), "defaults spelled out": ClassifierKey(train, TrainOptions{Epochs: 1, BatchSize: 16, Width: 8, LR: 2e-3}),
	} {
		if (k == key) != (name == "defaults spelled out") {
			t.Errorf("%s: key %s, original %s", name, k, key)
		}
	}
	if key != ClassifierKey(patterns(60, 8, 1), o) {
		t.Error("the same data gives another key")
	}
}

func TestQuarterMeans(t *testing.T) {
	s := torch.NewScope(torch.Inference)
	defer s.Close()
	// One 3×3 channel 0..8 and one constant channel: the odd middle row and
	// column go to the bottom and right quarters.
	h := s.FromFloat32s([]float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 1, 2, 3, 3)
	got, err := quarterMeans(s, h).Float32s()
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{0, 1, 1.5, 1, 4.5, 1, 6, 1}
	if !slices.Equal(got, want) {
		t.Errorf("quarter means %v, want %v", got, want)
	}
}
