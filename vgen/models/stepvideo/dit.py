"""Step-Video-T2V DiT (StepVideoModel, 30B): parameter names, shapes and order exactly as the
official checkpoints (checkpoint_layouts/stepvideo_t2v_dit.txt; stepvideo_t2v_dit_addcond.txt with
use_additional_conditions).

Tokens: latents [B, C, F, H, W] (vgen's layout; officially b f c h w) become one token per latent
pixel in (f, h, w) order through a 1x1 patch conv per frame. Each of the 48 blocks: adaLN-single
modulated self-attention (q/k RMSNorm, then 3D RoPE split [64, 32, 32] over (f, h, w), half-split
rotation, theta 1e4), a cross-attention to the text whose residual is neither modulated nor gated
(its input is the un-normalised hidden state), and a modulated, gated tanh-GELU FFN; no biases in
attention or FFN. The fused qkv rows are laid out per head ([q_h, k_h, v_h] for each head h), the
cross-attention's kv likewise ([k_h, v_h]).

Text: the Step-LLM states [B, 320, 6144] -> caption_norm (LayerNorm, no affine) ->
caption_projection; HunyuanCLIP's last hidden states [B, 77, 1024] -> clip_projection, PREPENDED:
397 keys, masked by [1]*77 + the LLM's mask (the official packing of valid keys first is the same
key mask). The timestep t in [0, 1] (data at 1) is multiplied by 1000 inside adaln_single.

RoPE angles are computed in fp32 (the official code rounds them to the compute dtype first)."""
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..layers.attention import AttentionCore, merge_heads
from ..layers.embeddings import sinusoid_freqs, timestep_embedding
from ..layers.init import declare_only, new_param, normal, uniform_fan_in, xavier_uniform, zeros
from ..layers.linear import GELUTanh, Linear, SiLU
from ..layers.modulation import split_rows, t2i_modulate
from ..layers.norms import LayerNorm, RMSNorm
from ..layers.seams import GatherSeam, SplitSeam
from ..layers.sharding import ShardableLayer

# the official StepVideoModel defaults (stepvideo/modules/model.py) = the released 30B
PRESETS = {
    "Step-Video-T2V": dict(in_channels=64, num_heads=48, head_dim=128, depth=48, caption_channels=6144,
                           clip_channels=1024, rope_split=(64, 32, 32), use_additional_conditions=False),
    "Step-Video-T2V-addcond": dict(in_channels=64, num_heads=48, head_dim=128, depth=48, caption_channels=6144,
                                   clip_channels=1024, rope_split=(64, 32, 32), use_additional_conditions=True),
    # the same code at a few million parameters (tests)
    "tiny": dict(in_channels=8, num_heads=4, head_dim=16, depth=2, caption_channels=32, clip_channels=16,
                 rope_split=(8, 4, 4), use_additional_conditions=False),
}
TIME_STEP_RESCALE = 1000.0  # AdaLayerNormSingle: timesteps in [0, 1] are embedded as t * 1000


# ---- embeddings ---------------------------------------------------------------------------------

class FramePatchEmbed(ShardableLayer):
    """PatchEmbed's Conv2d (kernel = stride = patch) applied to every frame, computed as patchify +
    matmul: [B, C, F, H, W] -> [B, F*h*w, D], tokens in (f, h, w) order. `proj.weight` [D, C, p, p]."""

    def __init__(self, in_channels: int, embed_dim: int, patch: int = 1):
        super().__init__()
        self.patch, self.embed_dim = patch, embed_dim
        fan_in = in_channels * patch * patch
        self.weight = new_param((embed_dim, in_channels, patch, patch), uniform_fan_in(fan_in))
        self.bias = new_param((embed_dim,), uniform_fan_in(fan_in))

    def construct(self, x):
        b, c, f, h, w = x.shape
        p = self.patch
        x = x.reshape(b, c, f, h // p, p, w // p, p).transpose(0, 2, 3, 5, 1, 4, 6)
        x = x.reshape(b, f * (h // p) * (w // p), c * p * p)
        return ops.dense(x, self.read("weight", self.weight).reshape(self.embed_dim, -1), self.read("bias", self.bias))


class PatchEmbed(nn.Cell):
    def __init__(self, in_channels: int, embed_dim: int, patch: int = 1):
        super().__init__()
        self.proj = FramePatchEmbed(in_channels, embed_dim, patch)

    def construct(self, x):
        return self.proj(x)


class TwoLinear(nn.Cell):
    """linear_1 -> activation -> linear_2 (diffusers' TimestepEmbedding with SiLU, and PixArt's
    caption projection with tanh-GELU)."""

    def __init__(self, in_features: int, dim: int, act: nn.Cell):
        super().__init__()
        self.linear_1 = Linear(in_features, dim)
        self.act = act
        self.linear_2 = Linear(dim, dim)

    def construct(self, x):
        return self.linear_2(self.act(self.linear_1(x)))


def timestep_embedding_mlp(in_channels: int, dim: int) -> TwoLinear:
    return TwoLinear(in_channels, dim, SiLU())


class CombinedTimestepSizeEmbeddings(nn.Cell):
    """PixArt-alpha's timestep embedding (flip_sin_to_cos: cos first, shift 0), plus, with additional
    conditions, the (h, w) resolution (half width each), the frame count and the fps."""

    def __init__(self, dim: int, use_additional_conditions: bool):
        super().__init__()
        self.freqs = Tensor(sinusoid_freqs(256))
        self.timestep_embedder = timestep_embedding_mlp(256, dim)
        self.use_additional_conditions = use_additional_conditions
        if use_additional_conditions:
            self.resolution_embedder = timestep_embedding_mlp(256, dim // 2)
            self.nframe_embedder = timestep_embedding_mlp(256, dim)
            self.fps_embedder = timestep_embedding_mlp(256, dim)

    def _sinusoid(self, v, dtype):
        return timestep_embedding(v, self.freqs).astype(dtype)

    def construct(self, t, dtype, resolution=None, nframe=None, fps=None):
        emb = self.timestep_embedder(self._sinusoid(t, dtype))
        if self.use_additional_conditions:
            b = t.shape[0]
            emb = emb + self.resolution_embedder(self._sinusoid(resolution.reshape(-1), dtype)).reshape(b, -1)
            emb = emb + self.nframe_embedder(self._sinusoid(nframe, dtype))
            emb = emb + self.fps_embedder(self._sinusoid(fps, dtype))
        return emb


class AdaLayerNormSingle(nn.Cell):
    def __init__(self, dim: int, use_additional_conditions: bool):
        super().__init__()
        self.emb = CombinedTimestepSizeEmbeddings(dim, use_additional_conditions)
        self.linear = Linear(dim, 6 * dim)

    def construct(self, t, dtype, resolution=None, nframe=None, fps=None):
        """(the 6 x dim block modulation, the embedded timestep of the final layer)."""
        embedded = self.emb(t.astype(ms.float32) * TIME_STEP_RESCALE, dtype, resolution, nframe, fps)
        return self.linear(ops.silu(embedded)), embedded


# ---- rotary position embedding --------------------------------------------------------------------

class Rope3D(nn.Cell):
    """(cos, sin) [F*H*W, sum(split)] in fp32 for the (f, h, w) grid: per axis chunk of `dim`,
    positions x 1/theta^(2i/dim), each angle repeated for both halves of the chunk (RoPE1D:
    cat(freqs, freqs))."""

    def __init__(self, split, theta: float = 1e4):
        super().__init__()
        self.split = tuple(int(d) for d in split)
        inv = [(1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)).astype(np.float32) for d in self.split]
        self.inv_f, self.inv_h, self.inv_w = Tensor(inv[0]), Tensor(inv[1]), Tensor(inv[2])

    @staticmethod
    def _angles(n: int, inv):
        ang = ops.arange(0, n, dtype=ms.float32)[:, None] * inv[None, :]
        return ops.cat((ang, ang), -1)  # [n, dim]

    def construct(self, f: int, h: int, w: int):
        df, dh, dw = self.split
        a_f = ops.broadcast_to(self._angles(f, self.inv_f)[:, None, None], (f, h, w, df))
        a_h = ops.broadcast_to(self._angles(h, self.inv_h)[None, :, None], (f, h, w, dh))
        a_w = ops.broadcast_to(self._angles(w, self.inv_w)[None, None, :], (f, h, w, dw))
        angles = ops.cat((a_f, a_h, a_w), -1).reshape(f * h * w, df + dh + dw)
        return ops.cos(angles), ops.sin(angles)


def rotate_half_chunks(x, split):
    """Per chunk of the head dim: (x1, x2) -> (-x2, x1)."""
    out, start = [], 0
    for dim in split:
        half = dim // 2
        out += [-x[..., start + half:start + dim], x[..., start:start + half]]
        start += dim
    return ops.cat(out, -1)


def apply_rope(x, cos, sin, split):
    """x [B, H, N, D] rotated by the tables [N, D], in fp32."""
    dtype = x.dtype
    xf = x.astype(ms.float32)
    return (xf * cos + rotate_half_chunks(xf, split) * sin).astype(dtype)


# ---- attention and the block ------------------------------------------------------------------------

def per_head(x, heads: int, parts: int):
    """[B, N, heads * parts * d] laid out (heads, parts, d) -> `parts` tensors [B, heads, N, d]."""
    b, n, c = x.shape
    d = c // (heads * parts)
    x = x.reshape(b, n, heads, parts, d).transpose(3, 0, 2, 1, 4)
    return tuple(x[i] for i in range(parts))


class SelfAttention(nn.Cell):
    def __init__(self, dim: int, head_dim: int, rope_split):
        super().__init__()
        self.heads, self.rope_split = dim // head_dim, tuple(rope_split)
        self.wqkv = Linear(dim, 3 * dim, bias=False)
        self.wo = Linear(dim, dim, bias=False)
        self.q_norm = RMSNorm(head_dim, 1e-6)
        self.k_norm = RMSNorm(head_dim, 1e-6)
        self.core = AttentionCore(head_dim)

    def construct(self, x, cos, sin, key_mask=None):
        q, k, v = per_head(self.wqkv(x), self.heads, 3)
        q = apply_rope(self.q_norm(q), cos, sin, self.rope_split)
        k = apply_rope(self.k_norm(k), cos, sin, self.rope_split)
        return self.wo(merge_heads(self.core(q, k, v, key_mask)))


class CrossAttention(nn.Cell):
    def __init__(self, dim: int, head_dim: int):
        super().__init__()
        self.heads = dim // head_dim
        self.wq = Linear(dim, dim, bias=False)
        self.wkv = Linear(dim, 2 * dim, bias=False)
        self.wo = Linear(dim, dim, bias=False)
        self.q_norm = RMSNorm(head_dim, 1e-6)
        self.k_norm = RMSNorm(head_dim, 1e-6)
        self.core = AttentionCore(head_dim)

    def construct(self, x, context, context_mask):
        (q,) = per_head(self.wq(x), self.heads, 1)
        k, v = per_head(self.wkv(context), self.heads, 2)
        out = self.core(self.q_norm(q), self.k_norm(k), v, context_mask)
        return self.wo(merge_heads(out))


class GELUProj(nn.Cell):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = Linear(dim, inner, bias=False)
        self.act = GELUTanh()

    def construct(self, x):
        return self.act(self.proj(x))


class Identity(nn.Cell):
    def construct(self, x):
        return x


class FeedForward(nn.Cell):
    """net = [GELU(proj), Identity, Linear]: the official indices 0 and 2."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.net = nn.CellList([GELUProj(dim, inner), Identity(), Linear(inner, dim, bias=False)])

    def construct(self, x):
        return self.net[2](self.net[0](x))


class StepVideoBlock(nn.Cell):
    def __init__(self, dim: int, head_dim: int, rope_split):
        super().__init__()
        self.dim = dim
        self.scale_shift_table = new_param((6, dim), normal(dim ** -0.5))
        self.norm1 = LayerNorm(dim, 1e-5, affine=True)
        self.attn1 = SelfAttention(dim, head_dim, rope_split)
        self.norm2 = LayerNorm(dim, 1e-5, affine=True)
        self.attn2 = CrossAttention(dim, head_dim)
        self.ff = FeedForward(dim, 4 * dim)

    def construct(self, x, context, context_mask, t_mod, cos, sin, key_mask=None):
        b = x.shape[0]
        mod = self.scale_shift_table[None] + t_mod.reshape(b, 6, self.dim)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = split_rows(mod, 6)
        x = x + gate_msa * self.attn1(t2i_modulate(self.norm1(x), shift_msa, scale_msa), cos, sin, key_mask)
        x = x + self.attn2(x, context, context_mask)  # neither modulated nor gated
        return x + gate_mlp * self.ff(t2i_modulate(self.norm2(x), shift_mlp, scale_mlp))


# ---- the model ---------------------------------------------------------------------------------------

class StepVideoDiT(nn.Cell):
    """Inputs: x [B, C, F, H, W] latents, t [B] in [0, 1] (noise 0 -> data 1), text_states [B, L, 6144]
    (Step-LLM), text_mask [B, L] (1 = valid, valid tokens first), clip_states [B, 77, 1024] (HunyuanCLIP
    last hidden states, all 77 attended), and with additional conditions fps [B]. Output: the velocity
    x_data - noise, [B, C, F, H, W] float32."""

    def __init__(self, in_channels=64, out_channels=None, num_heads=48, head_dim=128, depth=48, patch_size=1,
                 caption_channels=6144, clip_channels=1024, rope_split=(64, 32, 32), rope_theta=1e4,
                 use_additional_conditions=False):
        super().__init__()
        dim = num_heads * head_dim
        if sum(rope_split) != head_dim:
            raise ValueError(f"rope_split {list(rope_split)} must sum to the head dim {head_dim}")
        self.dim, self.patch_size = dim, patch_size
        self.in_channels, self.out_channels = in_channels, out_channels or in_channels
        self.use_additional_conditions = use_additional_conditions
        # state-dict order: the root's own parameter first, then the modules as registered
        self.scale_shift_table = new_param((2, dim), normal(dim ** -0.5))
        self.pos_embed = PatchEmbed(in_channels, dim, patch_size)
        self.transformer_blocks = nn.CellList([StepVideoBlock(dim, head_dim, rope_split) for _ in range(depth)])
        self.norm_out = LayerNorm(dim, 1e-6, affine=False)
        self.proj_out = Linear(dim, patch_size * patch_size * self.out_channels, init=xavier_uniform(), bias_init=zeros)
        self.adaln_single = AdaLayerNormSingle(dim, use_additional_conditions)
        self.clip_projection = Linear(clip_channels, dim)
        self.caption_norm = LayerNorm(caption_channels, 1e-6, affine=False)
        self.caption_projection = TwoLinear(caption_channels, dim, GELUTanh())  # PixArtAlphaTextProjection
        self.rope = Rope3D(rope_split, rope_theta)
        # where image tokens (with their RoPE rows) may be split across workers and gathered again;
        # the text (keys of the cross-attention) stays whole on every rank
        self.split_tokens = SplitSeam(axis=1)
        self.split_rope = SplitSeam(axis=0)
        self.gather_tokens = GatherSeam(axis=1, ndim=3)

    def construct(self, x, t, text_states, text_mask, clip_states, fps=None):
        dtype = self.pos_embed.proj.weight.dtype
        b, _, f, h_in, w_in = x.shape
        p = self.patch_size
        grid = (f, h_in // p, w_in // p)
        resolution = nframe = None
        if self.use_additional_conditions:  # the latent grid's (h, w) and frame count
            ones = ops.ones((b, 1), ms.float32)
            resolution = ops.cat((ones * grid[1], ones * grid[2]), 1)
            nframe = ones.reshape(b) * f
        t_mod, embedded = self.adaln_single(t, dtype, resolution, nframe, fps)

        context = self.caption_projection(self.caption_norm(text_states.astype(dtype)))
        context = ops.cat((self.clip_projection(clip_states.astype(dtype)), context), 1)
        context_mask = ops.cat((ops.ones((b, clip_states.shape[1]), ms.float32), text_mask.astype(ms.float32)), 1)

        tokens = self.pos_embed(x.astype(dtype))  # [B, F*h*w, D]
        n_full = tokens.shape[1]
        cos, sin = self.rope(grid[0], grid[1], grid[2])
        cos, sin = self.split_rope(cos), self.split_rope(sin)
        tokens = self.split_tokens(tokens)
        valid = self.split_tokens.valid(n_full, ms.float32)  # None unless the split pads
        key_mask = None if valid is None else ops.broadcast_to(valid[None], (b, tokens.shape[1]))
        for block in self.transformer_blocks:
            tokens = block(tokens, context, context_mask, t_mod, cos, sin, key_mask)

        shift, scale = split_rows(self.scale_shift_table[None] + embedded[:, None], 2)
        out = self.proj_out(t2i_modulate(self.norm_out(tokens), shift, scale))
        out = self.gather_tokens(out, n_full)
        return self.unpatchify(out, grid).astype(ms.float32)

    def unpatchify(self, x, grid):
        """[B, F*h*w, p*p*C] (official channel order (p, q, c)) -> [B, C, F, h*p, w*p]."""
        b = x.shape[0]
        f, h, w = grid
        p, c = self.patch_size, self.out_channels
        x = x.reshape(b, f, h, w, p, p, c).transpose(0, 6, 1, 2, 4, 3, 5)
        return x.reshape(b, c, f, h * p, w * p)


def build_stepvideo_dit(preset: str = "Step-Video-T2V", **overrides) -> StepVideoDiT:
    """A declared (not allocated) StepVideoDiT from a PRESETS entry plus overrides."""
    if preset not in PRESETS:
        raise KeyError(f"unknown Step-Video DiT preset {preset!r}; known: {sorted(PRESETS)}")
    with declare_only():
        return StepVideoDiT(**{**PRESETS[preset], **overrides})


def preset_names():
    return list(PRESETS)
