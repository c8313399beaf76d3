package unet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion/nn"
	"github.com/ddpm-go/ddpm/torch"
)

// referenceScript is the same network written in PyTorch. It reads the
// config (JSON), the weights and the inputs (safetensors files parsed by
// hand: an 8-byte little-endian header length, a JSON header, raw bytes),
// loads the weights with strict=True and prints the outputs as JSON.
const referenceScript = `
import json, math, struct, sys
import torch
import torch.nn as nn
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}

def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    body = raw[8 + n:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        flat = torch.frombuffer(bytearray(body[start:end]), dtype=dtype)
        tensors[name] = flat.reshape(info["shape"]).clone()
    return tensors

class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, temb, groups, dropout):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h

class AttnBlock(nn.Module):
    def __init__(self, ch, groups, heads):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, ch)
        self.q = nn.Conv2d(ch, ch, 1)
        self.k = nn.Conv2d(ch, ch, 1)
        self.v = nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        b, c, hh, ww = x.shape
        d = c // self.heads
        hn = self.norm(x)
        def heads(t):  # (b, c, h, w) -> (b, heads, hw, d)
            return t.reshape(b, self.heads, d, hh * ww).transpose(2, 3)
        q, k, v = heads(self.q(hn)), heads(self.k(hn)), heads(self.v(hn))
        w = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(d), dim=-1)
        out = (w @ v).transpose(2, 3).reshape(b, c, hh, ww)
        return x + self.proj_out(out)

class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)

class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))

class UNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch, temb = cfg["base_channels"], cfg["time_embed_dim"]
        groups, heads, drop = cfg["norm_groups"], cfg["num_heads"], cfg["dropout"]
        mult, nblocks = cfg["channel_mult"], cfg["num_res_blocks"]
        attn_res = cfg["attention_resolutions"] or []
        self.ch, self.num_classes = ch, cfg["num_classes"]
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, temb), nn.Linear(temb, temb)])
        if self.num_classes > 0:
            self.label_emb = nn.Embedding(self.num_classes + 1, temb)
        self.conv_in = nn.Conv2d(cfg["in_channels"], ch, 3, padding=1)
        res, cur, skips = cfg["image_size"], ch, [ch]
        self.down = nn.ModuleList()
        for i, m in enumerate(mult):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(nblocks):
                level.block.append(ResnetBlock(cur, ch * m, temb, groups, drop))
                cur = ch * m
                if res in attn_res:
                    level.attn.append(AttnBlock(cur, groups, heads))
                skips.append(cur)
            if i != len(mult) - 1:
                level.downsample = Downsample(cur)
                skips.append(cur)
                res //= 2
            self.down.append(level)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(cur, cur, temb, groups, drop)
        self.mid.attn_1 = AttnBlock(cur, groups, heads)
        self.mid.block_2 = ResnetBlock(cur, cur, temb, groups, drop)
        up = [None] * len(mult)
        for i in reversed(range(len(mult))):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(nblocks + 1):
                level.block.append(ResnetBlock(cur + skips.pop(), ch * mult[i], temb, groups, drop))
                cur = ch * mult[i]
                if res in attn_res:
                    level.attn.append(AttnBlock(cur, groups, heads))
            if i != 0:
                level.upsample = Upsample(cur)
                res *= 2
            up[i] = level
        self.up = nn.ModuleList(up)
        self.norm_out = nn.GroupNorm(groups, ch)
        self.conv_out = nn.Conv2d(ch, cfg["out_channels"], 3, padding=1)

    def timestep_embedding(self, t):
        half = self.ch // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, x, t, y=None):
        emb = self.temb.dense[1](F.silu(self.temb.dense[0](self.timestep_embedding(t))))
        if self.num_classes > 0:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long)
            emb = emb + self.label_emb(y)
        hs = [self.conv_in(x)]
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(hs[-1], emb)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
                hs.append(h)
            if hasattr(level, "downsample"):
                hs.append(level.downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], emb)), emb)
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            for j, block in enumerate(level.block):
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))

cfg = json.load(open(sys.argv[1]))
model = UNet(cfg).eval()
model.load_state_dict(read_safetensors(sys.argv[2]), strict=True)
inputs = read_safetensors(sys.argv[3])
result = {"num_params": sum(p.numel() for p in model.parameters())}
with torch.no_grad():
    result["out"] = model(inputs["x"], inputs["t"], inputs.get("labels")).flatten().tolist()
    if cfg["num_classes"] > 0:
        result["out_null"] = model(inputs["x"], inputs["t"], None).flatten().tolist()
print(json.dumps(result))
`

// referencePython returns a Python interpreter that has torch (DDPM_PYTHON,
// or Debian's /usr/bin/python3), or skips the test.
func referencePython(t *testing.T) string {
	t.Helper()
	py := os.Getenv("DDPM_PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
	}
	if _, err := exec.LookPath(py); err != nil {
		t.Skipf("no Python interpreter at %s (set DDPM_PYTHON to one with torch): %v", py, err)
	}
	if out, err := exec.Command(py, "-c", "import torch").CombinedOutput(); err != nil {
		t.Skipf("%s cannot import torch (install python3-torch or set DDPM_PYTHON): %v: %s", py, err, bytes.TrimSpace(out))
	}
	return py
}

type referenceResult struct {
	NumParams int64     `json:"num_params"`
	Out       []float64 `json:"out"`
	OutNull   []float64 `json:"out_null"`
}

// The Go U-Net and the PyTorch reference compute the same function: the
// same (randomly perturbed) weights and inputs give outputs that agree to a
// relative error below 1e-5 in float32.
func TestParityWithPyTorch(t *testing.T) {
	py := referencePython(t)
	tiny := preset(t, "tiny")
	conditional := tiny.clone()
	conditional.NumClasses = 4
	twoHeads := Config{
		ImageSize: 16, InChannels: 3, OutChannels: 6, BaseChannels: 16,
		ChannelMult: []int{1, 2, 2}, NumResBlocks: 2, AttentionResolutions: []int{8, 4},
		NumHeads: 2, Dropout: 0.1, NormGroups: 4, TimeEmbedDim: 48, NumClasses: 2,
	}
	cases := []struct {
		name string
		cfg  Config
	}{
		{"tiny unconditional", tiny},
		{"tiny class-conditional", conditional},
		{"two heads", twoHeads},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			u := newModel(t, tc.cfg, uint64(10+i))
			gen := newGen(t, uint64(20+i))
			perturb(t, u, gen, 0.05)

			s := torch.NewScope(torch.NoGrad)
			defer s.Close()
			x, tt, labels := randomInputs(s, u.Config(), 3, gen)
			inputs := map[string]*torch.Tensor{"x": x, "t": tt}
			if labels != nil {
				// Make sure the null label is among them.
				labels = s.Cat([]*torch.Tensor{s.Narrow(labels, 0, 0, 2), s.FromInt64s([]int64{int64(tc.cfg.NumClasses)}, 1)}, 0)
				inputs["labels"] = labels
			}
			out := u.Forward(s, x, tt, labels)
			var outNull *torch.Tensor
			if labels != nil {
				outNull = u.Forward(s, x, tt, nil)
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}

			cfgJSON, err := json.Marshal(u.Config())
			if err != nil {
				t.Fatal(err)
			}
			paths := map[string]string{}
			for _, name := range []string{"script.py", "config.json", "weights.safetensors", "inputs.safetensors"} {
				paths[name] = filepath.Join(dir, name)
			}
			if err := errors.Join(
				os.WriteFile(paths["script.py"], []byte(referenceScript), 0o644),
				os.WriteFile(paths["config.json"], cfgJSON, 0o644),
				torch.SaveSafetensors(paths["weights.safetensors"], nn.StateDict(u.Params()), nil),
				torch.SaveSafetensors(paths["inputs.safetensors"], inputs, nil),
			); err != nil {
				t.Fatal(err)
			}
			ref := runReference(t, py, paths["script.py"], paths["config.json"], paths["weights.safetensors"], paths["inputs.safetensors"])

			if want := nn.NumParams(u.Params()); ref.NumParams != want {
				t.Errorf("PyTorch model has %d parameters, Go model %d", ref.NumParams, want)
			}
			compare := func(what string, got *torch.Tensor, want []float64) {
				g := floats(t, got)
				if len(g) != len(want) {
					t.Fatalf("%s: %d values from Go, %d from PyTorch", what, len(g), len(want))
				}
				r := relErr(g, want)
				t.Logf("%s: relative error %.2g over %d values", what, r, len(g))
				if !(r < 1e-5) {
					t.Errorf("%s: relative error %g, want < 1e-5", what, r)
				}
			}
			compare("output", out, ref.Out)
			if outNull != nil {
				compare("output with nil labels", outNull, ref.OutNull)
			}
		})
	}
}

func runReference(t *testing.T, py string, args ...string) referenceResult {
	t.Helper()
	cmd := exec.Command(py, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("PyTorch reference failed: %v\n%s", err, stderr.String())
	}
	var r referenceResult
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("PyTorch reference output: %v\n%s", err, truncate(stdout.String(), 500))
	}
	return r
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("%s... (%d bytes)", s[:n], len(s))
}
