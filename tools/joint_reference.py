#!/usr/bin/python3
"""An independent PyTorch reference of the two text-and-image families exec/model/joint_model.cpp
trains (mmdit, unified), for the parity test. Computed in float64 so it is the oracle, not a peer.

mmdit, built the way SD3's MMDiT is (Esser et al. 2024; its reference mmdit.py): PatchEmbed (Conv2d)
plus DiT's fixed 2-D sin-cos positions; c = TimestepEmbedder(1000 t) + VectorEmbedder(pooled);
context = Linear(context); joint blocks of two "dismantled" DiT blocks (adaLN: shift, scale, gate
for attention then for the MLP; LayerNorm without affine, eps 1e-6; GELU(tanh) MLP) whose q, k, v
are concatenated over tokens for one softmax attention; the final adaLN layer on the image stream
only; unpatchify. Every block here has a full text stream (SD3 makes the last one pre_only), so
the last block's text projection and MLP feed nothing and get zero gradient.

unified, built the way a Llama block is (Touvron et al. 2023) and wired as Transfusion (Zhou et al.
2024) wires one image after its caption: sequence [text tokens; image patches]; text rows =
token table + 1-D sin-cos positions, image rows = Conv2d patches + 2-D sin-cos positions + the
timestep embedding; pre-norm blocks x += attn(RMSNorm(x)), x += mlp(RMSNorm(x)) (RMSNorm with a
gain, eps 1e-5; SwiGLU w2(silu(w1 x) * w3 x) or, not gated, fc2(GELU_tanh(fc1 x))); attention mask:
a text row sees the text rows up to itself, an image row sees all text and the whole image; a final
RMSNorm; an LM head (no bias) on the text rows, a Linear on the image rows, unpatchified. Loss =
mean next-token cross-entropy (text rows 0..Tt-2 predict tokens 1..Tt-1) + image_weight x the
rectified-flow loss.

Positions, as joint_model.cpp builds them: image rows use DiT's get_2d_sincos_pos_embed (imported
from dit_reference.py); text row j, column pair (2i, 2i+1) holds (sin, cos)(j / 10000^(2i/hidden)),
the interleaved encoding of Vaswani et al. 2017. Both families: z_t = (1 - t) x0 + t eps, target
eps - x0, loss over the first latent_channels output channels (learn_sigma doubles the output).

Usage: /usr/bin/python3 tools/joint_reference.py DIR [--threads N]
DIR holds config.json, params.f32 (ditwin's flat layout), x0.f32, noise.f32, t.f32 and, for mmdit,
context.f32 and pooled.f32, for unified tokens.i32; the script writes result.json (loss, its text
and image parts, per-tensor names, offsets and sizes, torch version) and grads.f64 (flat, same
layout).
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

from dit_reference import get_2d_sincos_pos_embed, modulate, timestep_embedding


# --- ditwin's flat layout -------------------------------------------------------------------------
# Groups "embed", "L0".."L{layers-1}", "head" back to back; inside each, tensors in this order.
# Linear weights are (out, in) row-major as nn.Linear holds them; the patch weight is the Conv2d's
# (hidden, C, p, p) flattened. Counted here from the config alone, not from the modules, so that
# a module that disagrees with the C++ layout fails the size check in load().
def flat_layout(cfg):
    h, fe = cfg["hidden"], cfg["frequency_embedding"]
    C, p, F_ = cfg["latent_channels"], cfg["patch"], cfg["ffn_hidden"]
    cout = 2 * C if cfg["learn_sigma"] else C
    mm, bias = cfg["family"] == "mmdit", cfg["linear_bias"]
    t = []
    if not mm:
        t.append(("embed.tok", cfg["vocab"] * h))
    t += [("embed.patch.w", h * C * p * p), ("embed.patch.b", h),
          ("embed.t.fc1.w", h * fe), ("embed.t.fc1.b", h), ("embed.t.fc2.w", h * h), ("embed.t.fc2.b", h)]
    if mm:
        t += [("embed.pooled.fc1.w", h * cfg["pooled_dim"]), ("embed.pooled.fc1.b", h),
              ("embed.pooled.fc2.w", h * h), ("embed.pooled.fc2.b", h),
              ("embed.context.w", h * cfg["context_dim"]), ("embed.context.b", h)]
    for i in range(cfg["layers"]):
        for s in (["img", "txt"] if mm else [None]):
            pre = f"L{i}.{s}." if s else f"L{i}."
            lin = lambda name, out, inp: [(pre + name + ".w", out * inp)] + ([(pre + name + ".b", out)] if bias else [])
            if mm:
                t += [(pre + "adaln.w", 6 * h * h), (pre + "adaln.b", 6 * h)]
            else:
                t.append((pre + "norm1.w", h))
            t += lin("qkv", 3 * h, h) + lin("proj", h, h)
            if not mm:
                t.append((pre + "norm2.w", h))
            if cfg["gated_mlp"]:
                # The C++ fc1 is one (2F, h) Linear whose first F outputs are the gate, the next F
                # the up projection: Llama's w1 then w3, weights then biases.
                t += [(pre + "w1.w", F_ * h), (pre + "w3.w", F_ * h)]
                if bias:
                    t += [(pre + "w1.b", F_), (pre + "w3.b", F_)]
                t += lin("w2", h, F_)
            else:
                t += lin("fc1", F_, h) + lin("fc2", h, F_)
    if mm:
        t += [("head.adaln.w", 2 * h * h), ("head.adaln.b", 2 * h)]
    else:
        t += [("head.norm.w", h), ("head.lm.w", cfg["vocab"] * h)]
    t += [("head.out.w", p * p * cout * h), ("head.out.b", p * p * cout)]
    return t


# --- shared pieces ---------------------------------------------------------------------------------
def mlp_embedder(d_in, h):  # SD3's TimestepEmbedder / VectorEmbedder body: Linear, SiLU, Linear
    return nn.Sequential(nn.Linear(d_in, h), nn.SiLU(), nn.Linear(h, h))


def attention(q, k, v, allowed=None):
    """q, k, v: (B, heads, N, head_dim); allowed: (N, N) bool, True where query i may see key j."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(dim=-1) @ v


class SelfAttention(nn.Module):
    def __init__(self, dim, heads, bias):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def pre_attention(self, x):  # -> q, k, v each (B, heads, N, head_dim)
        B, N, D = x.shape
        return self.qkv(x).reshape(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4).unbind(0)

    def post_attention(self, o):  # (B, heads, N, head_dim) -> (B, N, dim)
        B, _, N, _ = o.shape
        return self.proj(o.transpose(1, 2).reshape(B, N, -1))


def unpatchify(x, p, c):  # DiT's: token vectors ordered (row-in-patch, column-in-patch, channel)
    g = int(round(x.shape[1] ** 0.5))
    x = x.reshape(x.shape[0], g, g, p, p, c)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, g * p, g * p)


def layer_norm(x):  # LayerNorm(elementwise_affine=False, eps=1e-6)
    return F.layer_norm(x, (x.shape[-1],), eps=1e-6)


# --- MMDiT -------------------------------------------------------------------------------------------
class DismantledBlock(nn.Module):
    """One stream of a joint block: a DiT block split around its attention."""

    def __init__(self, h, heads, ffn, bias):
        super().__init__()
        self.attn = SelfAttention(h, heads, bias)
        self.fc1 = nn.Linear(h, ffn, bias=bias)
        self.fc2 = nn.Linear(ffn, h, bias=bias)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(h, 6 * h))

    def pre_attention(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        qkv = self.attn.pre_attention(modulate(layer_norm(x), shift_msa, scale_msa))
        return qkv, (x, gate_msa, shift_mlp, scale_mlp, gate_mlp)

    def post_attention(self, o, saved):
        x, gate_msa, shift_mlp, scale_mlp, gate_mlp = saved
        x = x + gate_msa.unsqueeze(1) * self.attn.post_attention(o)
        mlp = self.fc2(F.gelu(self.fc1(modulate(layer_norm(x), shift_mlp, scale_mlp)), approximate="tanh"))
        return x + gate_mlp.unsqueeze(1) * mlp


class JointBlock(nn.Module):
    def __init__(self, h, heads, ffn, bias):
        super().__init__()
        self.x_block = DismantledBlock(h, heads, ffn, bias)
        self.context_block = DismantledBlock(h, heads, ffn, bias)

    def forward(self, x, context, c):
        (xq, xk, xv), x_saved = self.x_block.pre_attention(x, c)
        (cq, ck, cv), c_saved = self.context_block.pre_attention(context, c)
        # Joint attention over [image; text] (SD3's code puts the text first; without a mask the
        # order of the keys does not change any output row).
        n = x.shape[1]
        o = attention(torch.cat([xq, cq], dim=2), torch.cat([xk, ck], dim=2), torch.cat([xv, cv], dim=2))
        return self.x_block.post_attention(o[:, :, :n], x_saved), self.context_block.post_attention(o[:, :, n:], c_saved)


class MMDiT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, C, p, bias = cfg["hidden"], cfg["latent_channels"], cfg["patch"], cfg["linear_bias"]
        self.p, self.fe = p, cfg["frequency_embedding"]
        self.out_channels = 2 * C if cfg["learn_sigma"] else C
        self.x_embedder = nn.Conv2d(C, h, kernel_size=p, stride=p)
        self.t_embedder = mlp_embedder(self.fe, h)
        self.y_embedder = mlp_embedder(cfg["pooled_dim"], h)
        self.context_embedder = nn.Linear(cfg["context_dim"], h)
        grid = cfg["latent_size"] // p
        self.register_buffer("pos_embed", torch.from_numpy(get_2d_sincos_pos_embed(h, grid)).unsqueeze(0))
        self.joint_blocks = nn.ModuleList(
            [JointBlock(h, cfg["heads"], cfg["ffn_hidden"], bias) for _ in range(cfg["layers"])])
        self.final_adaLN = nn.Sequential(nn.SiLU(), nn.Linear(h, 2 * h))
        self.final_linear = nn.Linear(h, p * p * self.out_channels)

    def tensors(self):
        t = {"embed.patch.w": self.x_embedder.weight, "embed.patch.b": self.x_embedder.bias,
             "embed.t.fc1.w": self.t_embedder[0].weight, "embed.t.fc1.b": self.t_embedder[0].bias,
             "embed.t.fc2.w": self.t_embedder[2].weight, "embed.t.fc2.b": self.t_embedder[2].bias,
             "embed.pooled.fc1.w": self.y_embedder[0].weight, "embed.pooled.fc1.b": self.y_embedder[0].bias,
             "embed.pooled.fc2.w": self.y_embedder[2].weight, "embed.pooled.fc2.b": self.y_embedder[2].bias,
             "embed.context.w": self.context_embedder.weight, "embed.context.b": self.context_embedder.bias,
             "head.adaln.w": self.final_adaLN[1].weight, "head.adaln.b": self.final_adaLN[1].bias,
             "head.out.w": self.final_linear.weight, "head.out.b": self.final_linear.bias}
        for i, jb in enumerate(self.joint_blocks):
            for s, b in (("img", jb.x_block), ("txt", jb.context_block)):
                for name, lin in (("adaln", b.adaLN_modulation[1]), ("qkv", b.attn.qkv), ("proj", b.attn.proj),
                                  ("fc1", b.fc1), ("fc2", b.fc2)):
                    t[f"L{i}.{s}.{name}.w"] = lin.weight
                    if lin.bias is not None:
                        t[f"L{i}.{s}.{name}.b"] = lin.bias
        return t

    def forward(self, z, t, context, pooled):
        x = self.x_embedder(z).flatten(2).transpose(1, 2) + self.pos_embed
        c = self.t_embedder(timestep_embedding(1000.0 * t, self.fe)) + self.y_embedder(pooled)
        context = self.context_embedder(context)
        for jb in self.joint_blocks:
            x, context = jb(x, context, c)
        shift, scale = self.final_adaLN(c).chunk(2, dim=1)
        x = self.final_linear(modulate(layer_norm(x), shift, scale))
        return unpatchify(x, self.p, self.out_channels), None


# --- unified (Transfusion) -----------------------------------------------------------------------------
class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class FeedForward(nn.Module):
    def __init__(self, h, ffn, gated, bias):
        super().__init__()
        self.gated = gated
        if gated:
            self.w1 = nn.Linear(h, ffn, bias=bias)  # gate
            self.w3 = nn.Linear(h, ffn, bias=bias)  # up
            self.w2 = nn.Linear(ffn, h, bias=bias)  # down
        else:
            self.fc1 = nn.Linear(h, ffn, bias=bias)
            self.fc2 = nn.Linear(ffn, h, bias=bias)

    def forward(self, x):
        if self.gated:
            return self.w2(F.silu(self.w1(x)) * self.w3(x))
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class TransformerBlock(nn.Module):
    def __init__(self, h, heads, ffn, gated, bias):
        super().__init__()
        self.attention_norm = RMSNorm(h)
        self.attention = SelfAttention(h, heads, bias)
        self.ffn_norm = RMSNorm(h)
        self.feed_forward = FeedForward(h, ffn, gated, bias)

    def forward(self, x, allowed):
        q, k, v = self.attention.pre_attention(self.attention_norm(x))
        x = x + self.attention.post_attention(attention(q, k, v, allowed))
        return x + self.feed_forward(self.ffn_norm(x))


def text_positions(n, dim):  # row j, columns (2i, 2i+1) = (sin, cos)(j / 10000^(2i/dim))
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    inv = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    pe = torch.zeros(n, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)
    return pe


def transfusion_mask(n_text, n_image):
    """(T, T) bool, True where row i may attend column j: causal over the whole sequence, and every
    image row sees the whole image (the one image is one bidirectional block after its caption)."""
    T = n_text + n_image
    allowed = torch.ones(T, T, dtype=torch.bool).tril()
    allowed[n_text:, n_text:] = True
    return allowed


class Unified(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, C, p, bias = cfg["hidden"], cfg["latent_channels"], cfg["patch"], cfg["linear_bias"]
        self.p, self.fe, self.Tt = p, cfg["frequency_embedding"], cfg["text_tokens"]
        self.out_channels = 2 * C if cfg["learn_sigma"] else C
        self.tok_embeddings = nn.Embedding(cfg["vocab"], h)
        self.x_embedder = nn.Conv2d(C, h, kernel_size=p, stride=p)
        self.t_embedder = mlp_embedder(self.fe, h)
        grid = cfg["latent_size"] // p
        self.register_buffer("pos_image", torch.from_numpy(get_2d_sincos_pos_embed(h, grid)).unsqueeze(0))
        self.register_buffer("pos_text", text_positions(self.Tt, h).unsqueeze(0))
        self.register_buffer("allowed", transfusion_mask(self.Tt, grid * grid))
        self.layers = nn.ModuleList([TransformerBlock(h, cfg["heads"], cfg["ffn_hidden"], cfg["gated_mlp"], bias)
                                     for _ in range(cfg["layers"])])
        self.norm = RMSNorm(h)
        self.output = nn.Linear(h, cfg["vocab"], bias=False)
        self.image_out = nn.Linear(h, p * p * self.out_channels)

    def tensors(self):
        t = {"embed.tok": self.tok_embeddings.weight,
             "embed.patch.w": self.x_embedder.weight, "embed.patch.b": self.x_embedder.bias,
             "embed.t.fc1.w": self.t_embedder[0].weight, "embed.t.fc1.b": self.t_embedder[0].bias,
             "embed.t.fc2.w": self.t_embedder[2].weight, "embed.t.fc2.b": self.t_embedder[2].bias,
             "head.norm.w": self.norm.weight, "head.lm.w": self.output.weight,
             "head.out.w": self.image_out.weight, "head.out.b": self.image_out.bias}
        for i, b in enumerate(self.layers):
            t[f"L{i}.norm1.w"] = b.attention_norm.weight
            t[f"L{i}.norm2.w"] = b.ffn_norm.weight
            ff = b.feed_forward
            lins = [("qkv", b.attention.qkv), ("proj", b.attention.proj)]
            lins += [("w1", ff.w1), ("w3", ff.w3), ("w2", ff.w2)] if ff.gated else [("fc1", ff.fc1), ("fc2", ff.fc2)]
            for name, lin in lins:
                t[f"L{i}.{name}.w"] = lin.weight
                if lin.bias is not None:
                    t[f"L{i}.{name}.b"] = lin.bias
        return t

    def forward(self, z, t, tokens):
        text = self.tok_embeddings(tokens) + self.pos_text
        temb = self.t_embedder(timestep_embedding(1000.0 * t, self.fe))
        image = self.x_embedder(z).flatten(2).transpose(1, 2) + self.pos_image + temb.unsqueeze(1)
        x = torch.cat([text, image], dim=1)
        for block in self.layers:
            x = block(x, self.allowed)
        x = self.norm(x)
        logits = self.output(x[:, :self.Tt])
        return unpatchify(self.image_out(x[:, self.Tt:]), self.p, self.out_channels), logits


def load(model, cfg, flat):
    """Copies the flat float32 parameters into the model by name; returns the layout with offsets."""
    modules = model.tensors()
    layout, offset = [], 0
    for name, n in flat_layout(cfg):
        if name not in modules:
            sys.exit(f"joint_reference: the layout names {name}, which the {cfg['family']} module lacks")
        p = modules.pop(name)
        if p.numel() != n:
            sys.exit(f"joint_reference: {name} has {p.numel()} values in the module, {n} in the layout")
        if offset + n > flat.size:
            sys.exit(f"joint_reference: params.f32 has {flat.size} values, the layout needs more")
        with torch.no_grad():
            p.copy_(torch.from_numpy(flat[offset:offset + n]).view_as(p))
        layout.append({"name": name, "offset": offset, "size": n})
        offset += n
    if modules:
        sys.exit(f"joint_reference: module tensors outside the layout: {sorted(modules)}")
    if offset != flat.size:
        sys.exit(f"joint_reference: params.f32 has {flat.size} values, the layout has {offset}")
    return layout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.dir, "config.json")) as f:
        cfg = json.load(f)
    read = lambda name, dtype: np.fromfile(os.path.join(args.dir, name), dtype=dtype)
    f64 = lambda name: torch.from_numpy(read(name, np.float32).astype(np.float64))

    family = cfg["family"]
    if family not in ("mmdit", "unified"):
        sys.exit(f"joint_reference: family {family!r} is not mmdit or unified (dit_reference.py runs dit)")
    model = (MMDiT(cfg) if family == "mmdit" else Unified(cfg)).double()
    layout = load(model, cfg, read("params.f32", np.float32).astype(np.float64))

    B, C, S, Tt = cfg["micro_batch"], cfg["latent_channels"], cfg["latent_size"], cfg["text_tokens"]
    x0 = f64("x0.f32").view(B, C, S, S)
    eps = f64("noise.f32").view(B, C, S, S)
    t = f64("t.f32")
    tb = t.view(B, 1, 1, 1)
    z = (1 - tb) * x0 + tb * eps
    if family == "mmdit":
        v_hat, _ = model(z, t, f64("context.f32").view(B, Tt, cfg["context_dim"]), f64("pooled.f32").view(B, cfg["pooled_dim"]))
        text_loss = torch.zeros((), dtype=torch.float64)
        image_weight = 1.0
    else:
        tokens = torch.from_numpy(read("tokens.i32", np.int32).astype(np.int64)).view(B, Tt)
        v_hat, logits = model(z, t, tokens)
        if Tt > 1:
            text_loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        else:
            text_loss = torch.zeros((), dtype=torch.float64)
        image_weight = cfg["image_weight"]
    image_loss = ((v_hat[:, :C] - (eps - x0)) ** 2).mean()
    loss = text_loss + image_weight * image_loss
    loss.backward()

    modules = model.tensors()
    grads = []
    for entry in layout:
        g = modules[entry["name"]].grad
        grads.append(np.zeros(entry["size"]) if g is None else g.detach().numpy().reshape(-1))
    np.concatenate(grads).astype(np.float64).tofile(os.path.join(args.dir, "grads.f64"))
    with open(os.path.join(args.dir, "result.json"), "w") as f:
        json.dump({"loss": loss.item(), "text_loss": text_loss.item(), "image_loss": image_loss.item(),
                   "torch": torch.__version__, "tensors": layout}, f)


if __name__ == "__main__":
    main()
