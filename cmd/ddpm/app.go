package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

// version is the CLI's own version, set at link time with
// -ldflags "-X main.version=...".
var version = "dev"

func newApp() *cli.App {
	app := &cli.App{
		Name:            "ddpm",
		Usage:           "train and sample denoising diffusion models (DDPM) on libtorch",
		Version:         version,
		HideVersion:     true,
		HideHelpCommand: true,
		Commands: []*cli.Command{
			trainCommand,
			trainAutoencoderCommand,
			sampleCommand,
			evalCommand,
			infoCommand,
			exportCommand,
			benchCommand,
			serveCommand,
			loadtestCommand,
			versionCommand,
		},
		// No command: the help; an unknown one: one line.
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 && c.Args().First() != "help" {
				return fmt.Errorf("unknown command %q (see ddpm --help)", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
		// Before any command, so before anything calls into libtorch.
		Before: func(*cli.Context) error { return checkEnvironment(os.LookupEnv) },
		// Errors are printed once, by main.
		ExitErrHandler: func(*cli.Context, error) {},
		// A bad flag is one line, not the whole help.
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return fmt.Errorf("%v (see ddpm --help)", err)
		},
	}
	for _, cmd := range app.Commands {
		name := cmd.Name
		cmd.OnUsageError = func(_ *cli.Context, err error, _ bool) error {
			return fmt.Errorf("%v (see ddpm %s --help)", err, name)
		}
		cmd.Before = noArguments(name, cmd.Before)
	}
	return app
}

// noArguments wraps a command's Before hook with the refusal of arguments.
// No command takes any, and the flag parser stops at the first word that
// is not a flag: a stray word used to drop every flag after it without a
// word ("help" still asks for the command's help).
func noArguments(name string, before cli.BeforeFunc) cli.BeforeFunc {
	return func(c *cli.Context) error {
		if c.NArg() > 0 && c.Args().First() != "help" {
			return fmt.Errorf("unexpected argument %q: ddpm %s takes only --flags, and those after it would be ignored (see ddpm %s --help)",
				c.Args().First(), name, name)
		}
		if before != nil {
			return before(c)
		}
		return nil
	}
}
