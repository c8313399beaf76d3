package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/ddpm-go/ddpm/torch"
	"github.com/urfave/cli/v2"
)

// Upper bounds of counts that several commands take. Past them a value is a
// slip of the keyboard, and the command would run out of memory or hang for
// hours instead of saying so.
const (
	// maxImages bounds the images one command samples (sample --n, eval
	// --n, train --eval-n and --final-eval): 1048576 images of 32x32x3
	// float32 pixels are 12 GiB, held at once.
	maxImages = 1 << 20
	// maxThreads bounds --threads: libtorch starts that many threads at
	// once, and no machine this runs on has more cores.
	maxThreads = 1024
	// maxWorkers bounds --workers of serve, loadtest and bench: each worker
	// is a goroutine with at least one intra-op thread of its own, and past
	// the cores they only wait for each other.
	maxWorkers = 64
)

// checkRange refuses an integer flag outside [lo, hi].
func checkRange[T int | int64](name string, v, lo, hi T) error {
	if v < lo || v > hi {
		return fmt.Errorf("--%s %d out of range [%d, %d]", name, v, lo, hi)
	}
	return nil
}

// finiteFlag refuses a float flag that is NaN or infinite: the libraries
// would take some of them (an infinite weight decay is "non-negative") and
// fail later, or write them where JSON cannot hold them.
func finiteFlag(name string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("--%s %g: want a finite number", name, v)
	}
	return nil
}

// givenHere reports whether flag name was given to this command, not left
// to its environment variable: a setting exported for every command (say
// DDPM_ETA) must not make one refuse what does not apply to it.
func givenHere(c *cli.Context, name string) bool {
	if !c.IsSet(name) {
		return false
	}
	for _, f := range c.Command.Flags {
		if e, ok := f.(interface{ GetEnvVars() []string }); ok && slices.Contains(f.Names(), name) {
			for _, v := range e.GetEnvVars() {
				if _, set := os.LookupEnv(v); set {
					return false // the flag or its variable: taken as the variable
				}
			}
		}
	}
	return true
}

// onlyOne refuses more than one of the named flags given (set and not
// empty): each names the same thing, a model say, and the command would
// use one and ignore the others.
func onlyOne(c *cli.Context, names ...string) error {
	var given []string
	for _, n := range names {
		if givenHere(c, n) && c.String(n) != "" {
			given = append(given, "--"+n)
		}
	}
	switch len(given) {
	case 0, 1:
		return nil
	case 2:
		return fmt.Errorf("give %s or %s, not both", given[0], given[1])
	}
	return fmt.Errorf("give %s or %s, not several", strings.Join(given[:len(given)-1], ", "), given[len(given)-1])
}

// setupDevice parses --device and applies --threads (0: torch.DefaultThreads).
func setupDevice(name string, threads int) (torch.Device, error) {
	dev, err := torch.ParseDevice(name)
	if err != nil {
		return dev, err
	}
	if err := checkRange("threads", threads, 0, maxThreads); err != nil {
		return dev, fmt.Errorf("%w (0: the default)", err)
	}
	if threads == 0 {
		threads = torch.DefaultThreads()
	}
	if threads > 0 {
		if err := torch.SetNumThreads(threads); err != nil {
			return dev, err
		}
	}
	return dev, nil
}

func joinNames(names []string) string { return strings.Join(names, ", ") }

// humanCount writes 35746307 as "35.7M".
func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1fG", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fk", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}

// gridColumns makes grids as square as possible (64 images: 8x8).
func gridColumns(n int) int { return int(math.Ceil(math.Sqrt(float64(n)))) }

// printJSON writes v as one indented JSON object (what --json prints).
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
