package data_test

import (
	"context"
	"fmt"

	"github.com/ddpm-go/ddpm/diffusion/data"
)

func ExampleLoader() {
	// Ten 1×2×2 images, labelled by parity.
	d := &data.Dataset{N: 10, C: 1, H: 2, W: 2, Images: make([]float32, 10*4), Labels: make([]int64, 10), NumClasses: 2}
	for i := range d.N {
		d.Labels[i] = int64(i % 2)
	}
	l, err := data.NewLoader(d, data.LoaderOptions{BatchSize: 4, Seed: 1, Shuffle: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()
	ctx := context.Background()
	l.Skip(2) // resume after two batches: the third batch of epoch 0 comes next
	for range 2 {
		b, err := l.Next(ctx)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("epoch %d batch %d: %d images, %d values\n", b.Epoch, b.Index, b.N, len(b.Images))
	}
	// Output:
	// epoch 0 batch 2: 2 images, 8 values
	// epoch 1 batch 0: 4 images, 16 values
}
