#!/usr/bin/python3
"""An independent PyTorch reference of the DiT that exec/dit_model.cpp trains, for the parity test.

Built the way the DiT repository (facebookresearch/DiT, models.py) builds it, with timm's attention:
Conv2d patch embedding + fixed 2-D sin-cos positions, TimestepEmbedder (sinusoid -> Linear -> SiLU ->
Linear), LabelEmbedder (num_classes + 1 rows), adaLN-Zero blocks, final adaLN layer, unpatchify;
rectified-flow loss mean((v_hat[:, :C] - (eps - x0))^2) at z_t = (1 - t) x0 + t eps, with the
timestep embedded as 1000 t. Computed in float64 so it is the oracle, not a peer.

Usage: /usr/bin/python3 tools/dit_reference.py DIR [--threads N]
DIR holds config.json, params.f32 (ditwin's flat layout), x0.f32, noise.f32, t.f32, y.i32; the
script writes result.json (loss, per-tensor offsets and sizes) and grads.f64 (flat, same layout).
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def get_2d_sincos_pos_embed(embed_dim, grid_size):
    # DiT's (from MAE): meshgrid(w, h), first half of the channels from the w coordinate.
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)
    grid = np.stack(grid, axis=0).reshape([2, 1, grid_size, grid_size])
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def timestep_embedding(t, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float64) / half)
    args = t[:, None].to(torch.float64) * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding.to(t.dtype)


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Attention(nn.Module):  # timm.models.vision_transformer.Attention, qkv_bias=True
    use_sdpa = False  # True: fused F.scaled_dot_product_attention (GPU benchmarks), not the explicit softmax

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if Attention.use_sdpa:
            return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C))
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class DiTBlock(nn.Module):
    def __init__(self, hidden, heads, ffn):
        super().__init__()
        self.attn = Attention(hidden, heads)
        self.fc1 = nn.Linear(hidden, ffn)
        self.fc2 = nn.Linear(ffn, hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        norm = lambda y: F.layer_norm(y, (y.shape[-1],), eps=1e-6)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(norm(x), shift_msa, scale_msa))
        mlp = self.fc2(F.gelu(self.fc1(modulate(norm(x), shift_mlp, scale_mlp)), approximate="tanh"))
        return x + gate_mlp.unsqueeze(1) * mlp


class DiT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, C, p = cfg["hidden"], cfg["latent_channels"], cfg["patch"]
        self.C, self.p, self.fe = C, p, cfg["frequency_embedding"]
        self.out_channels = 2 * C if cfg["learn_sigma"] else C
        self.num_classes = cfg["num_classes"]
        self.x_embedder = nn.Conv2d(C, h, kernel_size=p, stride=p, bias=True)
        self.t_embedder = nn.Sequential(nn.Linear(self.fe, h), nn.SiLU(), nn.Linear(h, h))
        self.y_embedder = nn.Embedding(self.num_classes + 1, h) if self.num_classes > 0 else None
        grid = cfg["latent_size"] // p
        self.register_buffer("pos_embed", torch.from_numpy(get_2d_sincos_pos_embed(h, grid)).unsqueeze(0))
        self.blocks = nn.ModuleList([DiTBlock(h, cfg["heads"], cfg["ffn_hidden"]) for _ in range(cfg["layers"])])
        self.final_adaLN = nn.Sequential(nn.SiLU(), nn.Linear(h, 2 * h))
        self.final_linear = nn.Linear(h, p * p * self.out_channels)

    # ditwin's flat parameter layout: groups "embed", "L0".., "head", tensors in this order.
    def layout(self):
        t = [("embed.patch.w", self.x_embedder.weight), ("embed.patch.b", self.x_embedder.bias),
             ("embed.t.fc1.w", self.t_embedder[0].weight), ("embed.t.fc1.b", self.t_embedder[0].bias),
             ("embed.t.fc2.w", self.t_embedder[2].weight), ("embed.t.fc2.b", self.t_embedder[2].bias)]
        if self.y_embedder is not None:
            t.append(("embed.y_table", self.y_embedder.weight))
        for i, b in enumerate(self.blocks):
            t += [(f"L{i}.adaln.w", b.adaLN_modulation[1].weight), (f"L{i}.adaln.b", b.adaLN_modulation[1].bias),
                  (f"L{i}.qkv.w", b.attn.qkv.weight), (f"L{i}.qkv.b", b.attn.qkv.bias),
                  (f"L{i}.proj.w", b.attn.proj.weight), (f"L{i}.proj.b", b.attn.proj.bias),
                  (f"L{i}.fc1.w", b.fc1.weight), (f"L{i}.fc1.b", b.fc1.bias),
                  (f"L{i}.fc2.w", b.fc2.weight), (f"L{i}.fc2.b", b.fc2.bias)]
        t += [("head.adaln.w", self.final_adaLN[1].weight), ("head.adaln.b", self.final_adaLN[1].bias),
              ("head.linear.w", self.final_linear.weight), ("head.linear.b", self.final_linear.bias)]
        return t

    def unpatchify(self, x):
        c, p = self.out_channels, self.p
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, h * p)

    def forward(self, x, t, y):
        x = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed
        c = self.t_embedder(timestep_embedding(1000.0 * t, self.fe))
        if self.y_embedder is not None:
            c = c + self.y_embedder(y)
        for block in self.blocks:
            x = block(x, c)
        shift, scale = self.final_adaLN(c).chunk(2, dim=1)
        x = self.final_linear(modulate(F.layer_norm(x, (x.shape[-1],), eps=1e-6), shift, scale))
        return self.unpatchify(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.dir, "config.json")) as f:
        cfg = json.load(f)
    read = lambda name, dtype: np.fromfile(os.path.join(args.dir, name), dtype=dtype)

    model = DiT(cfg).double()
    flat = read("params.f32", np.float32).astype(np.float64)
    tensors, offset = [], 0
    with torch.no_grad():
        for name, p in model.layout():
            n = p.numel()
            if offset + n > flat.size:
                sys.exit(f"dit_reference: params.f32 has {flat.size} values, the layout needs more")
            p.copy_(torch.from_numpy(flat[offset:offset + n]).view_as(p))
            tensors.append({"name": name, "offset": offset, "size": n})
            offset += n
    if offset != flat.size:
        sys.exit(f"dit_reference: params.f32 has {flat.size} values, the layout has {offset}")

    B, C, S = cfg["micro_batch"], cfg["latent_channels"], cfg["latent_size"]
    x0 = torch.from_numpy(read("x0.f32", np.float32).astype(np.float64)).view(B, C, S, S)
    eps = torch.from_numpy(read("noise.f32", np.float32).astype(np.float64)).view(B, C, S, S)
    t = torch.from_numpy(read("t.f32", np.float32).astype(np.float64))
    y = torch.from_numpy(read("y.i32", np.int32).astype(np.int64))

    tb = t.view(B, 1, 1, 1)
    z = (1 - tb) * x0 + tb * eps
    v_hat = model(z, t, y)
    loss = ((v_hat[:, :C] - (eps - x0)) ** 2).mean()
    loss.backward()

    grads = np.concatenate([p.grad.detach().numpy().reshape(-1) for _, p in model.layout()])
    grads.astype(np.float64).tofile(os.path.join(args.dir, "grads.f64"))
    with open(os.path.join(args.dir, "result.json"), "w") as f:
        json.dump({"loss": loss.item(), "torch": torch.__version__, "tensors": tensors}, f)


if __name__ == "__main__":
    main()
