package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/ddpm-go/ddpm/diffusion/data"
	"github.com/ddpm-go/ddpm/diffusion/features"
	"github.com/ddpm-go/ddpm/diffusion/metrics"
	"github.com/ddpm-go/ddpm/diffusion/pipeline"
	"github.com/ddpm-go/ddpm/torch"
	"github.com/urfave/cli/v2"
)

var evalFlags = []cli.Flag{
	&cli.IntFlag{Name: "n", Value: 1000, Usage: "images to sample (with --floor: test images)", EnvVars: []string{"DDPM_N"}},
	&cli.StringFlag{Name: "images", Usage: "score the images of this folder instead of sampling", EnvVars: []string{"DDPM_EVAL_IMAGES"}},
	&cli.BoolFlag{Name: "floor", Usage: "score test images against the training images: the value a perfect model would get", EnvVars: []string{"DDPM_EVAL_FLOOR"}},
	&cli.StringFlag{Name: "ref", Usage: "reference images, any dataset train reads (default: the model's training data, else Fashion-MNIST)", EnvVars: []string{"DDPM_REF"}},
	&cli.IntFlag{Name: "image-size", Value: 32, Usage: "image size without a model (with one: the model's)", EnvVars: []string{"DDPM_EVAL_IMAGE_SIZE"}},
	&cli.StringFlag{Name: "cache-dir", Usage: "where feature classifiers are kept and " + features.InceptionFile + " is looked for (default: the user's cache directory/ddpm)", EnvVars: []string{features.CacheDirEnv}},
	&cli.IntFlag{Name: "classifier-epochs", Value: 3, Usage: "epochs of the feature classifier (part of its cache key)", EnvVars: []string{"DDPM_CLASSIFIER_EPOCHS"}},
	&cli.StringFlag{Name: "inception", Usage: "the TorchScript Inception network " + features.InceptionFile + " (without it, Inception metrics are skipped)", EnvVars: []string{features.InceptionEnv}},
	&cli.StringFlag{Name: "inception-method", Value: features.DefaultInceptionMethod, Usage: "method of the Inception file that gives the pool features", EnvVars: []string{"DDPM_INCEPTION_METHOD"}},
	&cli.IntFlag{Name: "inception-dim", Value: features.InceptionDim, Usage: "features per image the Inception method gives", EnvVars: []string{"DDPM_INCEPTION_DIM"}},
	&cli.StringFlag{Name: "ref-stats", Usage: "Inception statistics of the reference (.npz with mu and sigma, as pytorch-fid writes) instead of computing them", EnvVars: []string{"DDPM_REF_STATS"}},
	&cli.StringFlag{Name: "write-ref-stats", Usage: "write the reference's Inception statistics to this .npz", EnvVars: []string{"DDPM_WRITE_REF_STATS"}},
	&cli.IntFlag{Name: "ref-n", Usage: "reference images for the Inception statistics, drawn at random (0 = all)", EnvVars: []string{"DDPM_REF_N"}},
	&cli.IntFlag{Name: "kid-subsets", Value: metrics.DefaultKIDSubsets, Usage: "KID subsets", EnvVars: []string{"DDPM_KID_SUBSETS"}},
	&cli.IntFlag{Name: "kid-subset-size", Value: metrics.DefaultKIDSubsetSize, Usage: "images per KID subset", EnvVars: []string{"DDPM_KID_SUBSET_SIZE"}},
	&cli.BoolFlag{Name: "json", Usage: "print one JSON object", EnvVars: []string{"DDPM_JSON"}},
	&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress output", EnvVars: []string{"DDPM_QUIET"}},
}

var evalCommand = &cli.Command{
	Name:  "eval",
	Usage: "score samples against the data: offline FID in a classifier's feature space, and Inception FID, KID and IS",
	Description: "Samples --n images from a model (--run or --checkpoint) or reads --images, and prints one\n" +
		"metric a line on stdout: fid-classifier, kid-classifier, classifier-accuracy and class-histogram\n" +
		"in the feature space of a small classifier trained on the reference data's labels (cached;\n" +
		"not comparable with Inception FID), then fid-inception, kid-inception and inception-score\n" +
		"when the Inception network is at hand (--inception; it is never downloaded).\n" +
		"--floor scores the data's test split instead: the value a perfect model would get.",
	Flags:  append(append(append([]cli.Flag{}, modelFlags...), samplerFlags...), evalFlags...),
	Action: runEval,
}

// evalResult is what eval prints.
type evalResult struct {
	N                  int            `json:"n"`
	FIDClassifier      *float64       `json:"fid_classifier,omitempty"`
	KIDClassifier      *float64       `json:"kid_classifier,omitempty"`
	KIDClassifierStd   *float64       `json:"kid_classifier_std,omitempty"`
	ClassifierAccuracy *float64       `json:"classifier_accuracy,omitempty"`
	ClassHistogram     map[string]int `json:"class_histogram,omitempty"`
	FIDInception       *float64       `json:"fid_inception,omitempty"`
	KIDInception       *float64       `json:"kid_inception,omitempty"`
	KIDInceptionStd    *float64       `json:"kid_inception_std,omitempty"`
	InceptionScore     *float64       `json:"inception_score,omitempty"`
	InceptionScoreStd  *float64       `json:"inception_score_std,omitempty"`

	histogram []string // "name:count", in class order
}

func ptr(v float64) *float64 { return &v }

// evaluation holds what runEval works with.
type evaluation struct {
	c      *cli.Context
	ctx    context.Context
	dev    torch.Device
	notes  io.Writer // progress and notes; stdout is for the metrics
	quiet  bool
	cache  string
	opts   features.Options
	size   int
	chans  int // 0: the reference's
	refArg string
}

func runEval(c *cli.Context) error {
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt)
	defer stop()
	e := &evaluation{c: c, ctx: ctx, notes: c.App.ErrWriter, quiet: c.Bool("quiet"), refArg: c.String("ref"),
		opts: features.Options{KIDSubsets: c.Int("kid-subsets"), KIDSubsetSize: c.Int("kid-subset-size"), Seed: c.Uint64("seed")}}
	n := c.Int("n")
	hasModel := c.String("run") != "" || c.String("checkpoint") != "" || c.String("model") != ""
	images, floor, writeStats, refStats := c.String("images"), c.Bool("floor"), c.String("write-ref-stats"), c.String("ref-stats")
	if err := checkRange("n", n, 2, maxImages); err != nil {
		return err
	}
	switch {
	case floor && (hasModel || images != ""):
		return fmt.Errorf("--floor scores the data's own test split; it takes no --run, --checkpoint, --model or --images")
	case !floor && !hasModel && images == "" && writeStats == "":
		return fmt.Errorf("what to score? give --run RUN_DIR, --checkpoint FILE, --model DIFFUSERS_DIR, --images FOLDER or --floor")
	case writeStats != "" && refStats != "":
		return fmt.Errorf("give --ref-stats or --write-ref-stats, not both")
	case e.opts.KIDSubsets < 1 || e.opts.KIDSubsetSize < 2:
		return fmt.Errorf("--kid-subsets %d and --kid-subset-size %d must be at least 1 and 2", e.opts.KIDSubsets, e.opts.KIDSubsetSize)
	case c.Int("ref-n") < 0 || c.Int("ref-n") == 1:
		return fmt.Errorf("--ref-n %d must be 0 (all) or at least 2", c.Int("ref-n"))
	case c.Int("classifier-epochs") < 1:
		return fmt.Errorf("--classifier-epochs %d must be at least 1", c.Int("classifier-epochs"))
	}
	if writeStats != "" {
		if err := checkWritableDir(filepath.Dir(writeStats)); err != nil {
			return err
		}
	}
	var err error
	if e.cache = c.String("cache-dir"); e.cache == "" {
		if e.cache, err = features.DefaultCacheDir(); err != nil {
			return err
		}
	}
	if e.dev, err = setupDevice(c.String("device"), c.Int("threads")); err != nil {
		return err
	}

	// The model, if any, fixes the geometry and the default reference.
	var p *pipeline.Pipeline
	var so pipeline.GenerateOptions
	e.size = c.Int("image-size")
	if hasModel {
		if p, err = loadPipeline(c); err != nil {
			return err
		}
		defer p.Close()
		if so, err = sampleOptions(c, p, n); err != nil {
			return err
		}
		info := p.Info()
		if info.NumClasses > 0 && so.Labels == nil && !givenHere(c, "class") {
			// A class-conditional model is scored on every class in turn,
			// as training's evaluations sample it (not on the null label,
			// which a run without label dropout never trained).
			so.Labels = pipeline.CycleLabels(n, info.NumClasses)
			e.note("sampling the %d classes in turn (--class C scores one, --class -1 the null label)", info.NumClasses)
		}
		e.size, e.chans = info.Size, info.Channels
		if e.refArg == "" {
			if e.refArg, err = trainingData(info.Data); err != nil {
				return err
			}
		}
	} else if e.size < 1 {
		return fmt.Errorf("--image-size %d must be positive", e.size)
	}

	// The Inception network is loaded first, so that a bad file fails fast.
	inception, err := e.loadInception()
	if err != nil {
		return err
	}
	if inception != nil {
		defer inception.Close()
	} else if writeStats != "" {
		return fmt.Errorf("--write-ref-stats writes Inception statistics and needs the network: %w", e.inceptionMissing())
	}

	ref, err := openDataset(e.refArg, e.size, e.chans)
	if err != nil {
		return err
	}
	test, err := testSplit(ref.Path, e.size, ref.C)
	if err != nil {
		return err
	}
	if floor || images != "" || hasModel {
		if err := e.checkClassifierCache(ref, test); err != nil {
			return err
		}
	}

	// What is scored.
	var gen *data.Dataset
	switch {
	case floor:
		if test == nil {
			return fmt.Errorf("--floor needs a test split beside the reference %s (t10k-images-idx3-ubyte or test_batch.bin)", ref.Source)
		}
		_, gen = test.Split(min(n, test.N), c.Uint64("seed"))
		e.note("scoring %d test images of %s against its %d training images", gen.N, test.Source, ref.N)
	case images != "":
		if gen, err = data.ReadImageFolder(images, e.size, ref.C); err != nil {
			return err
		}
		if gen.N < 2 {
			return fmt.Errorf("%s holds %d image; scores need at least 2", images, gen.N)
		}
	case hasModel:
		if gen, err = e.sample(p, n, so); err != nil {
			return err
		}
	}

	res := &evalResult{}
	if gen != nil {
		res.N = gen.N
		if err := e.classifierMetrics(res, ref, test, gen); err != nil {
			return err
		}
	}
	if inception != nil {
		if err := e.inceptionMetrics(res, inception, ref, gen); err != nil {
			return err
		}
	} else {
		e.note("inception metrics skipped: %v", e.inceptionMissing())
	}
	if gen == nil {
		return nil
	}
	if res.FIDClassifier == nil && res.FIDInception == nil {
		return fmt.Errorf("nothing to report: the reference %s has no labels for the classifier, and there is no Inception network", ref.Source)
	}
	return printEval(c.App.Writer, res, c.Bool("json"))
}

// note writes one line to the notes stream.
func (e *evaluation) note(format string, args ...any) {
	fmt.Fprintf(e.notes, "ddpm: "+format+"\n", args...)
}

// trainingData checks the training data path a checkpoint records; ""
// (no record) means the default data.
func trainingData(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("the model was trained on %s, which is not there; give the reference images with --ref", path)
	}
	return path, nil
}

// testSplit opens the test split that lies beside a training set opened
// from path (an IDX file or folder, or CIFAR-10 batches), or returns nil.
func testSplit(path string, size, channels int) (*data.Dataset, error) {
	dir := path
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		dir = filepath.Dir(path)
	}
	for _, name := range []string{"t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte",
		"test_batch.bin", filepath.Join("cifar-10-batches-bin", "test_batch.bin")} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			d, err := data.Open(p, size, channels)
			if err != nil || d.Labels == nil {
				return nil, err
			}
			return d, nil
		}
	}
	return nil, nil
}

// sample draws n images from the model with the sampler settings o.
func (e *evaluation) sample(p *pipeline.Pipeline, n int, o pipeline.GenerateOptions) (*data.Dataset, error) {
	bar := newProgress(e.notes, e.quiet, "sample", int64(n))
	o.OnBatch = func(done, total int) { bar.update(int64(done), "images") }
	imgs, err := p.Generate(e.ctx, n, o)
	bar.finish()
	if err != nil {
		return nil, err
	}
	return &data.Dataset{N: imgs.N, C: imgs.C, H: imgs.H, W: imgs.W, Images: imgs.Pixels, Source: "samples"}, nil
}

// extract computes features with a progress bar.
func (e *evaluation) extract(ext features.Extractor, ds *data.Dataset, label string) (*features.FeatureSet, error) {
	bar := newProgress(e.notes, e.quiet, label, int64(ds.N))
	fs, err := features.Extract(e.ctx, ext, ds, features.ExtractOptions{OnBatch: func(done, total int) {
		bar.update(int64(done), "images")
	}})
	bar.finish()
	return fs, err
}

// noteFewImages says when a FID is of fewer images than its features have
// dimensions: the estimate of their covariance is then singular and the
// FID far above what more images give (the test images against the
// training set of Fashion-MNIST in the classifier's 256 dimensions: 8.07 of
// 64 images, 1.67 of 256, 0.47 of 1000).
func (e *evaluation) noteFewImages(metric string, fs *features.FeatureSet) {
	if fs.N < fs.Dim {
		e.note("%s of %d images, fewer than its %d feature dimensions: it reads high; compare it only with scores of as many images", metric, fs.N, fs.Dim)
	}
}

// classifierMetrics fills the fid-classifier family, unless the reference
// has no labels to train the classifier on.
func (e *evaluation) classifierMetrics(res *evalResult, ref, test, gen *data.Dataset) error {
	if ref.Labels == nil || ref.NumClasses < 2 {
		e.note("classifier metrics skipped: the reference %s has no labels to train the classifier on", ref.Source)
		return nil
	}
	clf, err := e.classifier(ref, test)
	if err != nil {
		return err
	}
	defer clf.Close()
	refFeats, err := e.extract(clf, ref, "reference features")
	if err != nil {
		return err
	}
	refStats, err := features.NewReference(refFeats)
	if err != nil {
		return err
	}
	genFeats, err := e.extract(clf, gen, "features")
	if err != nil {
		return err
	}
	r, err := features.Compare(genFeats, refStats, e.opts)
	if err != nil {
		return err
	}
	e.noteFewImages("fid-classifier", genFeats)
	res.FIDClassifier = ptr(r.FID)
	if r.HasKID {
		res.KIDClassifier, res.KIDClassifierStd = ptr(r.KID), ptr(r.KIDStd)
	}
	if test != nil {
		acc, err := clf.Accuracy(e.ctx, test)
		if err != nil {
			return err
		}
		res.ClassifierAccuracy = ptr(acc)
	} else {
		e.note("classifier-accuracy left out: no test split beside %s", ref.Source)
	}
	res.ClassHistogram = map[string]int{}
	for i, count := range r.Histogram {
		name := fmt.Sprint(i)
		if i < len(ref.ClassNames) {
			name = ref.ClassNames[i]
		}
		res.ClassHistogram[name] = count
		res.histogram = append(res.histogram, strings.ReplaceAll(name, " ", "_")+fmt.Sprintf(":%d", count))
	}
	return nil
}

// classifierOptions are the feature classifier's training options; its
// cache key depends on them.
func (e *evaluation) classifierOptions(test *data.Dataset) features.TrainOptions {
	return features.TrainOptions{Epochs: e.c.Int("classifier-epochs"), Device: e.dev, Test: test}
}

// checkClassifierCache fails when the feature classifier of ref is to be
// trained and the cache cannot take it: found now, not after minutes of
// sampling and training. A cache that holds the classifier may be read-only.
func (e *evaluation) checkClassifierCache(ref, test *data.Dataset) error {
	if ref.Labels == nil || ref.NumClasses < 2 {
		return nil // no classifier
	}
	path := features.ClassifierPath(e.cache, features.ClassifierKey(ref, e.classifierOptions(test)))
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := checkWritableDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("--cache-dir: the feature classifier is cached there once trained: %w", err)
	}
	return nil
}

// classifier loads or trains the feature classifier of the reference.
func (e *evaluation) classifier(ref, test *data.Dataset) (*features.Classifier, error) {
	o := e.classifierOptions(test)
	path := features.ClassifierPath(e.cache, features.ClassifierKey(ref, o))
	var bar *progress
	o.OnProgress = func(p features.TrainProgress) {
		if bar == nil {
			e.note("training the feature classifier on %d images of %s (once: it is cached as %s)", ref.N, ref.Source, path)
			bar = newProgress(e.notes, e.quiet, "classifier", int64(p.Steps))
		}
		bar.update(int64(p.Step), fmt.Sprintf("epoch %d/%d loss %.4f", p.Epoch, p.Epochs, p.Loss))
	}
	clf, err := features.ClassifierFor(e.ctx, ref, e.cache, o)
	if bar != nil {
		bar.finish()
	}
	return clf, err
}

// loadInception loads the Inception network named by --inception (an error
// if that fails) or found in the cache directory (nil if it is not there).
func (e *evaluation) loadInception() (*features.TorchScriptExtractor, error) {
	given := e.c.String("inception")
	path, err := features.FindInception(given, e.cache)
	if errors.Is(err, features.ErrNoInception) && given == "" {
		if e.c.String("ref-stats") != "" {
			return nil, fmt.Errorf("--ref-stats holds Inception statistics, which need the network: %w", err)
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return features.LoadInception(path, features.InceptionOptions{
		Method: e.c.String("inception-method"), Dim: e.c.Int("inception-dim"), Device: e.dev})
}

// inceptionMissing is the error that says which file to get.
func (e *evaluation) inceptionMissing() error {
	_, err := features.FindInception("", e.cache)
	return err
}

// inceptionMetrics fills fid-inception and friends; with gen nil it only
// writes the reference statistics.
func (e *evaluation) inceptionMetrics(res *evalResult, ext *features.TorchScriptExtractor, ref, gen *data.Dataset) error {
	var reference *features.Reference
	var err error
	if path := e.c.String("ref-stats"); path != "" {
		if reference, err = features.ReferenceFromFile(path); err != nil {
			return err
		}
		if d := reference.Stats.Dim(); d != ext.Dim() {
			return fmt.Errorf("%s holds statistics of %d features, and the Inception network gives %d", path, d, ext.Dim())
		}
	} else {
		if k := e.c.Int("ref-n"); k > 0 && k < ref.N {
			_, ref = ref.Split(k, e.c.Uint64("seed"))
		}
		fs, err := e.extract(ext, ref, "reference inception features")
		if err != nil {
			return err
		}
		if reference, err = features.NewReference(fs); err != nil {
			return err
		}
		if out := e.c.String("write-ref-stats"); out != "" {
			if err := metrics.WriteNPZ(out, reference.Stats); err != nil {
				return err
			}
			e.note("wrote %s (Inception statistics of %d images of %s)", out, ref.N, ref.Source)
		}
	}
	if gen == nil {
		return nil
	}
	fs, err := e.extract(ext, gen, "inception features")
	if err != nil {
		return err
	}
	r, err := features.Compare(fs, reference, e.opts)
	if err != nil {
		return err
	}
	e.noteFewImages("fid-inception", fs)
	res.FIDInception = ptr(r.FID)
	if r.HasKID {
		res.KIDInception, res.KIDInceptionStd = ptr(r.KID), ptr(r.KIDStd)
	} else if reference.Features == nil {
		e.note("kid-inception left out: --ref-stats holds no features")
	}
	if r.HasIS {
		res.InceptionScore, res.InceptionScoreStd = ptr(r.IS), ptr(r.ISStd)
	}
	return nil
}

// printEval writes one metric a line, or one JSON object.
func printEval(w io.Writer, r *evalResult, asJSON bool) error {
	if asJSON {
		return printJSON(w, r)
	}
	var b strings.Builder
	line := func(name string, v *float64, format string) {
		if v != nil {
			fmt.Fprintf(&b, "%s "+format+"\n", name, *v)
		}
	}
	withStd := func(name string, v, std *float64, format string) {
		if v != nil {
			fmt.Fprintf(&b, "%s "+format+" ± "+format+"\n", name, *v, *std)
		}
	}
	line("fid-classifier", r.FIDClassifier, "%.4f")
	withStd("kid-classifier", r.KIDClassifier, r.KIDClassifierStd, "%.6f")
	line("classifier-accuracy", r.ClassifierAccuracy, "%.4f")
	if len(r.histogram) > 0 {
		fmt.Fprintf(&b, "class-histogram %s\n", strings.Join(r.histogram, " "))
	}
	line("fid-inception", r.FIDInception, "%.4f")
	withStd("kid-inception", r.KIDInception, r.KIDInceptionStd, "%.6f")
	withStd("inception-score", r.InceptionScore, r.InceptionScoreStd, "%.4f")
	_, err := io.WriteString(w, b.String())
	return err
}
