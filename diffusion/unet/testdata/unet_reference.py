"""The U-Net of package unet written in PyTorch, for the tests that compare
the two: same modules, same parameter names (a state_dict loads with
strict=True), same arithmetic.

Tensors travel between Go and Python as safetensors files, read and written
here by hand (an 8-byte little-endian header length, a JSON header, raw
little-endian bytes), without the safetensors package.
"""
import json
import math
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}


def read_safetensors(path):
    """Reads every tensor of a safetensors file into a dict."""
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


def write_safetensors(path, tensors):
    """Writes a dict of CPU tensors of the dtypes in DTYPES."""
    names = {v: k for k, v in DTYPES.items()}
    header, chunks, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.detach().contiguous().numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)


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
