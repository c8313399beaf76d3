package main

import (
	"fmt"

	"github.com/ddpm-go/ddpm/torch"
	"github.com/urfave/cli/v2"
)

var versionCommand = &cli.Command{
	Name:  "version",
	Usage: "print the versions of ddpm, libtorch and the BLAS, CUDA availability and threads",
	Action: func(c *cli.Context) error {
		w := c.App.Writer
		fmt.Fprintf(w, "ddpm      %s\n", version)
		fmt.Fprintf(w, "libtorch  %s\n", torch.Version())
		if torch.CUDAAvailable() {
			fmt.Fprintf(w, "cuda      available (%d device(s))\n", torch.CUDADeviceCount())
		} else {
			fmt.Fprintf(w, "cuda      not available\n")
		}
		if blas := torch.BLAS(); blas != "" {
			fmt.Fprintf(w, "blas      %s\n", blas)
		}
		threads := torch.NumThreads()
		if n := torch.DefaultThreads(); n > 0 {
			threads = n
		}
		fmt.Fprintf(w, "threads   %d (intra-op CPU threads the commands use without --threads; libtorch's default: %d)\n",
			threads, torch.NumThreads())
		return nil
	},
}
