package diffusion_test

import (
	"fmt"
	"log"

	"github.com/ddpm-go/ddpm/diffusion"
)

func ExampleNewSchedule() {
	s, err := diffusion.NewSchedule(diffusion.DefaultScheduleConfig())
	if err != nil {
		log.Fatal(err)
	}
	betas, alphasCumprod := s.Betas(), s.AlphasCumprod()
	fmt.Println("T:", s.T())
	fmt.Printf("beta_1: %.6g\n", betas[0])
	fmt.Printf("beta_T: %.6g\n", betas[s.T()-1])
	fmt.Printf("alphabar_T: %.6g\n", alphasCumprod[s.T()-1])
	// Output:
	// T: 1000
	// beta_1: 0.0001
	// beta_T: 0.02
	// alphabar_T: 4.03583e-05
}

func ExampleNewSchedule_zeroTerminalSNR() {
	cfg := diffusion.DefaultScheduleConfig()
	cfg.Kind = diffusion.Cosine
	cfg.ZeroTerminalSNR = true
	s, err := diffusion.NewSchedule(cfg)
	if err != nil {
		log.Fatal(err)
	}
	last := s.T() - 1
	fmt.Printf("alphabar_T: %g\n", s.At(last).AlphaCumprod)
	fmt.Printf("beta_T: %g\n", s.At(last).Beta)
	fmt.Printf("logSNR_T: %g\n", s.LogSNR()[last])
	// Output:
	// alphabar_T: 0
	// beta_T: 1
	// logSNR_T: -Inf
}

func ExampleSchedule_Timesteps() {
	s, err := diffusion.NewSchedule(diffusion.DefaultScheduleConfig())
	if err != nil {
		log.Fatal(err)
	}
	for _, spacing := range []diffusion.Spacing{diffusion.SpacingTrailing, diffusion.SpacingLeading, diffusion.SpacingLinspace} {
		ts, err := s.Timesteps(10, spacing)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(spacing, ts)
	}
	// Output:
	// trailing [999 899 799 699 599 499 399 299 199 99]
	// leading [900 800 700 600 500 400 300 200 100 0]
	// linspace [999 888 777 666 555 444 333 222 111 0]
}

func ExampleParseScheduleKind() {
	k, err := diffusion.ParseScheduleKind("scaled_linear")
	fmt.Println(k, err)
	_, err = diffusion.ParseScheduleKind("quadratic")
	fmt.Println(err)
	// Output:
	// scaled-linear <nil>
	// diffusion: unknown schedule kind "quadratic" (valid: linear, cosine, scaled-linear, sigmoid)
}
