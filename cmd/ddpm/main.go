// Command ddpm trains and samples denoising diffusion models.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "ddpm: %v\n", err)
		os.Exit(1)
	}
}
