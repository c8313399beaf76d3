package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/urfave/cli/v2/altsrc"
)

// parseTrainConfig takes numbers where the flag does (an integer for a
// float flag too) and refuses, naming the file and the key, what the
// flags would reject or silently drop.
func TestParseTrainConfig(t *testing.T) {
	src, err := parseTrainConfig("c.yaml", []byte("lr: 1\nsteps: 5\nseed: 3\nchannel-mult: [1, 2]\nflip: true\npreset: tiny\n"))
	if err != nil {
		t.Fatal(err)
	}
	if lr, err := src.Float64("lr"); err != nil || lr != 1 {
		t.Errorf("lr = %v, %v", lr, err)
	}
	if seed, err := src.Uint64("seed"); err != nil || seed != 3 {
		t.Errorf("seed = %v, %v", seed, err)
	}
	if m, err := src.IntSlice("channel-mult"); err != nil || fmt.Sprint(m) != "[1 2]" {
		t.Errorf("channel-mult = %v, %v", m, err)
	}
	for _, c := range []struct{ body, want string }{
		{"out: runs/x\n", `key "out" can only be given on the command line (--out)`},
		{"config: other.yaml\n", `key "config" can only be given`},
		{"steps: abc\n", `key "steps" wants an integer, not "abc"`},
		{"steps: 1.5\n", `key "steps" wants an integer, not "1.5"`},
		{"steps:\n", `key "steps" wants an integer, not an empty value`},
		{"seed: -1\n", `key "seed" wants a non-negative integer`},
		{"lr: fast\n", `key "lr" wants a number`},
		{"flip: 1\n", `key "flip" wants true or false`},
		{"preset: [tiny]\n", `key "preset" wants a string (quote it), not a list`},
		{"channel-mult: 2\n", `key "channel-mult" wants a list of integers`},
		{"channel-mult: [1, x]\n", `key "channel-mult" wants a list of integers`},
		{"- steps\n", "is not a YAML or JSON mapping"},
		{"{\"steps\": 3", "is not a YAML or JSON mapping"},
	} {
		_, err := parseTrainConfig("c.yaml", []byte(c.body))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "c.yaml") || strings.Contains(err.Error(), "\n") {
			t.Errorf("config %q: %v; want one line naming the file with %q", c.body, err, c.want)
		}
	}
}

// Any bytes as a --config file: an error, or values that every flag they
// name takes from its input source.
func FuzzParseTrainConfig(f *testing.F) {
	for _, s := range []string{"steps: 3\nlr: 2e-4\n", `{"preset": "tiny", "channel-mult": [1, 2], "flip": true, "seed": 18446744073709551615}`,
		"a.b: 1\n", "steps: !!float 3\n", "? [1, 2]\n: 3\n", "dropout: .nan\nlr: .inf\n", "T: 0x10\nkeep: 1_000\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		src, err := parseTrainConfig("c.yaml", b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "config file c.yaml") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q: want one line naming the file", err)
			}
			return
		}
		for _, fl := range trainFlags {
			name := fl.Names()[0]
			var err error
			switch fl.(type) {
			case *altsrc.StringFlag:
				_, err = src.String(name)
			case *altsrc.BoolFlag:
				_, err = src.Bool(name)
			case *altsrc.IntFlag:
				_, err = src.Int(name)
			case *altsrc.Int64Flag:
				_, err = src.Int64(name)
			case *altsrc.Uint64Flag:
				_, err = src.Uint64(name)
			case *altsrc.Float64Flag:
				_, err = src.Float64(name)
			case *altsrc.IntSliceFlag:
				_, err = src.IntSlice(name)
			}
			if err != nil {
				t.Fatalf("accepted %q, but flag %s cannot take it: %v", b, name, err)
			}
		}
	})
}
