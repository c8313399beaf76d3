package unet

import "slices"

// The channel and resolution bookkeeping of the network, shared by New and
// by the analytic parameter and FLOP counts, so the three cannot disagree.

// resSpec is one residual block: in and out channels, whether an attention
// block follows it, and the resolution it runs at.
type resSpec struct {
	in, out int64
	attn    bool
}

// levelSpec is one resolution level of the U.
type levelSpec struct {
	res        int64     // feature-map height and width at this level
	down       []resSpec // NumResBlocks blocks
	downsample bool      // a stride-2 conv follows (all levels but the last)
	up         []resSpec // NumResBlocks+1 blocks, each fed a skip connection
	upsample   bool      // an upsampling conv follows (all levels but the first)
}

// layout is the whole network for a valid config with defaults applied.
type layout struct {
	levels []levelSpec
	midCh  int64 // channels of the middle blocks
	midRes int64
}

func (c Config) layout() layout {
	base := int64(c.BaseChannels)
	res := int64(c.ImageSize)
	cur := base
	skips := []int64{cur} // the output of conv_in
	var l layout
	for i, m := range c.ChannelMult {
		lv := levelSpec{res: res}
		out := base * int64(m)
		attn := slices.Contains(c.AttentionResolutions, int(res))
		for range c.NumResBlocks {
			lv.down = append(lv.down, resSpec{in: cur, out: out, attn: attn})
			cur = out
			skips = append(skips, cur)
		}
		if i != len(c.ChannelMult)-1 {
			lv.downsample = true
			skips = append(skips, cur)
			res /= 2
		}
		l.levels = append(l.levels, lv)
	}
	l.midCh, l.midRes = cur, res
	for i := len(c.ChannelMult) - 1; i >= 0; i-- {
		lv := &l.levels[i]
		out := base * int64(c.ChannelMult[i])
		attn := slices.Contains(c.AttentionResolutions, int(lv.res))
		for range c.NumResBlocks + 1 {
			skip := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			lv.up = append(lv.up, resSpec{in: cur + skip, out: out, attn: attn})
			cur = out
		}
		lv.upsample = i != 0
	}
	return l
}

// NumParams is the number of parameters of the model c describes (with
// defaults applied), counted without building it. c must be valid.
func (c Config) NumParams() int64 {
	c = c.WithDefaults()
	l := c.layout()
	temb := int64(c.TimeEmbedDim)
	linear := func(in, out int64) int64 { return in*out + out }
	conv := func(in, out, k int64) int64 { return in*out*k*k + out }
	norm := func(ch int64) int64 { return 2 * ch }
	res := func(r resSpec) int64 {
		n := norm(r.in) + conv(r.in, r.out, 3) + linear(temb, r.out) + norm(r.out) + conv(r.out, r.out, 3)
		if r.in != r.out {
			n += conv(r.in, r.out, 1)
		}
		return n
	}
	attn := func(ch int64) int64 { return norm(ch) + 4*conv(ch, ch, 1) }
	blocks := func(rs []resSpec) int64 {
		var n int64
		for _, r := range rs {
			n += res(r)
			if r.attn {
				n += attn(r.out)
			}
		}
		return n
	}

	base := int64(c.BaseChannels)
	n := linear(base, temb) + linear(temb, temb)
	n += int64(c.LabelRows()) * temb
	n += conv(int64(c.InChannels), base, 3)
	for _, lv := range l.levels {
		n += blocks(lv.down) + blocks(lv.up)
		ch := lv.down[len(lv.down)-1].out
		if lv.downsample {
			n += conv(ch, ch, 3)
		}
		if lv.upsample {
			ch = lv.up[len(lv.up)-1].out
			n += conv(ch, ch, 3)
		}
	}
	mid := resSpec{in: l.midCh, out: l.midCh}
	n += 2*res(mid) + attn(l.midCh)
	n += norm(base) + conv(base, int64(c.OutChannels), 3)
	return n
}

// FLOPs is the number of floating-point operations of one forward pass for
// one image of ImageSize x ImageSize, counted as two per multiply-add of the
// convolutions, linear layers and attention matrix products (normalisation,
// activations, softmax and additions are left out, as is usual). c must be
// valid.
func (c Config) FLOPs() int64 {
	c = c.WithDefaults()
	l := c.layout()
	temb := int64(c.TimeEmbedDim)
	// Multiply-adds of a k x k convolution producing an r x r map.
	conv := func(in, out, k, r int64) int64 { return in * out * k * k * r * r }
	res := func(b resSpec, r int64) int64 {
		n := conv(b.in, b.out, 3, r) + temb*b.out + conv(b.out, b.out, 3, r)
		if b.in != b.out {
			n += conv(b.in, b.out, 1, r)
		}
		return n
	}
	// q, k, v and output projections plus q k^T and the weighted sum of v,
	// whatever the number of heads.
	attn := func(ch, r int64) int64 { return 4*conv(ch, ch, 1, r) + 2*(r*r)*(r*r)*ch }
	blocks := func(rs []resSpec, r int64) int64 {
		var n int64
		for _, b := range rs {
			n += res(b, r)
			if b.attn {
				n += attn(b.out, r)
			}
		}
		return n
	}

	base := int64(c.BaseChannels)
	size := int64(c.ImageSize)
	macs := base*temb + temb*temb
	macs += conv(int64(c.InChannels), base, 3, size)
	for _, lv := range l.levels {
		macs += blocks(lv.down, lv.res) + blocks(lv.up, lv.res)
		if lv.downsample {
			ch := lv.down[len(lv.down)-1].out
			macs += conv(ch, ch, 3, lv.res/2)
		}
		if lv.upsample {
			// The conv after upsampling runs at the next level's (double)
			// resolution, on this level's channels.
			ch := lv.up[len(lv.up)-1].out
			macs += conv(ch, ch, 3, lv.res*2)
		}
	}
	mid := resSpec{in: l.midCh, out: l.midCh}
	macs += 2*res(mid, l.midRes) + attn(l.midCh, l.midRes)
	macs += conv(base, int64(c.OutChannels), 3, size)
	return 2 * macs
}
