// Command ddpm trains and samples denoising diffusion models.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

func main() { os.Exit(run(os.Args, os.Stdout, os.Stderr)) }

// run is the whole program: errors are printed once, as one line
// "ddpm: <what went wrong>", with exit status 1; a command stopped by
// Ctrl-C exits with 130, as shells expect.
func run(args []string, stdout, stderr io.Writer) int {
	app := newApp()
	app.Writer, app.ErrWriter = stdout, stderr
	err := app.Run(args)
	var stop interrupted
	switch {
	case errors.As(err, &stop):
		return 130
	case err != nil:
		fmt.Fprintf(stderr, "ddpm: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		return 1
	}
	return 0
}

// interrupted is returned by a command that stopped cleanly on Ctrl-C or
// SIGTERM after saying so itself.
type interrupted struct{}

func (interrupted) Error() string { return "interrupted" }
