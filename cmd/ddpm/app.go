package main

import (
	"github.com/urfave/cli/v2"
)

// version is the CLI's own version, set at link time with
// -ldflags "-X main.version=...".
var version = "dev"

func newApp() *cli.App {
	return &cli.App{
		Name:            "ddpm",
		Usage:           "train and sample denoising diffusion models (DDPM) on libtorch",
		Version:         version,
		HideVersion:     true,
		HideHelpCommand: true,
		Commands: []*cli.Command{
			trainCommand,
			sampleCommand,
			evalCommand,
			infoCommand,
			exportCommand,
			benchCommand,
			versionCommand,
		},
		// Errors are printed once, by main.
		ExitErrHandler: func(*cli.Context, error) {},
	}
}
