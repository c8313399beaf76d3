package data

import (
	"math/bits"
	"math/rand/v2"
)

// Streams keep the random numbers drawn for different purposes independent.
const (
	streamShuffle = iota
	streamFlip
	streamSplit
)

// newRand returns the PCG generator for one purpose (stream) in one epoch
// of a run seeded with seed. Both PCG seeds go through splitmix64 so that
// nearby seeds and epochs give unrelated sequences.
func newRand(seed uint64, stream, epoch int) *rand.PCG {
	return rand.NewPCG(splitmix64(seed), splitmix64(uint64(epoch)<<2|uint64(stream)))
}

// splitmix64 is the finaliser of Steele, Lea and Flood's SplitMix64.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// below returns a uniform integer in [0, n) by Lemire's multiply-and-reject
// method. It is written out here, rather than taken from math/rand/v2, so
// that a seed gives the same order on every Go release: only the PCG output
// itself is relied on.
func below(r *rand.PCG, n uint64) uint64 {
	hi, lo := bits.Mul64(r.Uint64(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(r.Uint64(), n)
		}
	}
	return hi
}

// permutation returns a uniformly random permutation of [0, n)
// (Fisher–Yates).
func permutation(n int, r *rand.PCG) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	for i := n - 1; i > 0; i-- {
		j := int(below(r, uint64(i)+1))
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// coinFlips returns n fair coin flips.
func coinFlips(n int, r *rand.PCG) []bool {
	f := make([]bool, n)
	var word uint64
	for i := range f {
		if i%64 == 0 {
			word = r.Uint64()
		}
		f[i] = word&1 == 1
		word >>= 1
	}
	return f
}
