"""OpenSora 1.1 STDiT2: STDiT with its own temporal modulation, q/k RMSNorm, temporal RoPE, size
conditioning and per-frame (t=0) modulation of conditioning frames. Parameter names, shapes and order
exactly as the official checkpoints (checkpoint_layouts/opensora_v1_1_stdit2_xl2.txt).

Token layout as STDiT: x [B, T*S, C] with S = H'*W' tokens per frame, frames outermost. Inside a
block x is viewed as [B, T, S, C] so that modulation can differ per frame.
"""
import math

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ..layers.attention import CrossAttention, SelfAttention
from ..layers.embeddings import CaptionEmbedder, PatchEmbed3D, TimestepEmbedder, timestep_embedding
from ..layers.init import constant, declare_only, new_param, normal, xavier_uniform, zeros
from ..layers.linear import Linear, Mlp, SiLU
from ..layers.modulation import T2IFinalLayer, split_rows, t2i_modulate
from ..layers.norms import LayerNorm


# ---- temporal rotary embedding ----------------------------------------------------------------

def rope_freqs(dim: int, theta: float = 10000.0) -> np.ndarray:
    """1 / theta^(2i/dim), i < dim/2: one frequency per rotated pair."""
    return (1.0 / theta ** (np.arange(0, dim, 2)[: dim // 2].astype(np.float32) / dim)).astype(np.float32)


def rotate_pairs(x, cos, sin):
    """Rotates the interleaved pairs (x0,x1), (x2,x3), ... of the last dim by the angles whose
    cos/sin are [N, D/2] (N = the second-to-last dim of x); computed in fp32."""
    shape = x.shape
    xf = x.astype(ms.float32).reshape(shape[:-1] + (shape[-1] // 2, 2))
    even, odd = xf[..., 0], xf[..., 1]
    out = ops.concat(((even * cos - odd * sin)[..., None], (odd * cos + even * sin)[..., None]), -1)
    return out.reshape(shape).astype(x.dtype)


class RotaryEmbedding(nn.Cell):
    """RoPE over the sequence axis (-2) of [..., N, D] with interleaved pairs, as the
    rotary-embedding-torch library the official model uses ("lang" frequencies, positions 0..N-1).

    `freqs` is a parameter that is never trained (the official `rope.freqs`, requires_grad=False):
    it is in the checkpoint and in the parameter count."""

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        self.freqs = new_param((dim // 2,), constant(lambda: rope_freqs(dim, theta)), requires_grad=False)

    def construct(self, x):
        positions = ops.arange(0, x.shape[-2], dtype=ms.float32)
        angles = positions[:, None] * self.freqs.astype(ms.float32)[None]  # [N, D/2]
        return rotate_pairs(x, ops.cos(angles), ops.sin(angles))


# ---- size conditioning and on-the-fly positions -----------------------------------------------

class SizeEmbedder(TimestepEmbedder):
    """Embeds each of D scalars per sample like a timestep: [B, D] -> [B, D*hidden] (PixArt-alpha).
    Unlike the timestep MLP it keeps the default xavier init, as the official model does."""

    def __init__(self, hidden_size: int):
        super().__init__(hidden_size)
        self.hidden_size = hidden_size
        self.mlp[0].weight.init_fn = xavier_uniform()
        self.mlp[2].weight.init_fn = xavier_uniform()

    def construct(self, s, dtype=ms.float32):
        b, d = s.shape
        emb = self.mlp(timestep_embedding(s.reshape(-1), self.freqs).astype(dtype))
        return emb.reshape(b, d * self.hidden_size)


def spatial_pos_embed(dim: int, grid_hw, scale, base_size: int):
    """The 2D sin-cos table [H'*W', dim] of the official PositionEmbedding2D, computed in-graph
    because `scale` (a tensor) depends on the pixel size. Rows in (h, w) order; the first half of
    each row encodes the w coordinate, the second half the h coordinate (as sincos_2d)."""
    gh, gw = grid_hw
    inv_freq = 1.0 / 10000 ** (ops.arange(0, dim // 2, 2, dtype=ms.float32) / (dim // 2))
    pos_h = ops.arange(0, gh, dtype=ms.float32) / scale * (base_size / gh)
    pos_w = ops.arange(0, gw, dtype=ms.float32) / scale * (base_size / gw)
    pos_h = ops.broadcast_to(pos_h[:, None], (gh, gw)).reshape(-1)
    pos_w = ops.broadcast_to(pos_w[None, :], (gh, gw)).reshape(-1)

    def sin_cos(pos):
        out = pos[:, None] * inv_freq[None]
        return ops.concat((ops.sin(out), ops.cos(out)), -1)

    return ops.concat((sin_cos(pos_w), sin_cos(pos_h)), -1)


# ---- frame-masked adaLN ---------------------------------------------------------------------

def frame_modulation(table, t_mod, frame_mask=None, t0_mod=None):
    """adaLN rows (table + t) per frame, [B, F, n, C]: F = 1 without a frame mask; with one, F = T
    and frames where the mask is False take the t=0 rows instead. Selecting rows per frame equals
    the official selection between modulated outputs (the same elementwise ops)."""
    b = t_mod.shape[0]
    n, c = table.shape
    mod = (table[None] + t_mod.reshape(b, n, c))[:, None]  # [B, 1, n, C]
    if frame_mask is None:
        return mod
    mod0 = (table[None] + t0_mod.reshape(b, n, c))[:, None]
    return ops.where(frame_mask[:, :, None, None], mod, mod0)  # [B, T, n, C]


def rows(mod, n: int):
    """[B, F, n, C] -> n tensors [B, F, 1, C] that broadcast over x [B, T, S, C]."""
    return tuple(mod[:, :, i:i + 1] for i in range(n))


class STDiT2Block(nn.Cell):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True):
        super().__init__()
        self.hidden_size = hidden_size
        norm_kind = "rms" if qk_norm else None
        self.norm1 = LayerNorm(hidden_size, 1e-6, affine=False)
        self.attn = SelfAttention(hidden_size, num_heads, qkv_bias=True, qk_norm=norm_kind)
        self.scale_shift_table = new_param((6, hidden_size), normal(hidden_size ** -0.5))
        self.cross_attn = CrossAttention(hidden_size, num_heads)
        self.norm2 = LayerNorm(hidden_size, 1e-6, affine=False)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.norm_temp = LayerNorm(hidden_size, 1e-6, affine=False)
        # official order inside Attention: RoPE on q and k, then the q/k RMSNorm
        self.attn_temp = SelfAttention(hidden_size, num_heads, qkv_bias=True, qk_norm=norm_kind,
                                       rope_before_norm=True)
        self.scale_shift_table_temporal = new_param((3, hidden_size), normal(hidden_size ** -0.5))
        # zero-init as the official model: cross-attn and temporal outputs start at 0
        for p in (self.cross_attn.proj.weight, self.cross_attn.proj.bias,
                  self.attn_temp.proj.weight, self.attn_temp.proj.bias):
            p.init_fn = zeros

    def construct(self, x, y, t_spc, t_tmp, y_mask, num_frames: int, rope, frame_mask=None, t0_spc=None,
                  t0_tmp=None):
        b, n, c = x.shape
        t_len, s = num_frames, n // num_frames
        spc = frame_modulation(self.scale_shift_table, t_spc, frame_mask, t0_spc)
        tmp = frame_modulation(self.scale_shift_table_temporal, t_tmp, frame_mask, t0_tmp)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = rows(spc, 6)
        shift_tmp, scale_tmp, gate_tmp = rows(tmp, 3)
        x = x.reshape(b, t_len, s, c)

        # spatial branch: within each frame
        x_m = t2i_modulate(self.norm1(x), shift_msa, scale_msa)
        x_s = self.attn(x_m.reshape(b * t_len, s, c)).reshape(b, t_len, s, c)
        x = x + gate_msa * x_s

        # temporal branch: across frames at each spatial position, with its own modulation and RoPE
        x_m = t2i_modulate(self.norm_temp(x), shift_tmp, scale_tmp)
        x_t = x_m.transpose(0, 2, 1, 3).reshape(b * s, t_len, c)
        x_t = self.attn_temp(x_t, rope).reshape(b, s, t_len, c).transpose(0, 2, 1, 3)
        x = x + gate_tmp * x_t

        # cross-attention: no modulation
        x = x.reshape(b, n, c)
        x = (x + self.cross_attn(x, y, y_mask)).reshape(b, t_len, s, c)

        x_m = t2i_modulate(self.norm2(x), shift_mlp, scale_mlp)
        x = x + gate_mlp * self.mlp(x_m)
        return x.reshape(b, n, c)


class FrameMaskedFinalLayer(T2IFinalLayer):
    """PixArt's final layer; with a frame mask, frames where it is False use the t=0 rows.

    As the official T2IFinalLayer does, the t=0 branch normalises and modulates the output of the
    timestep branch (not x itself). Only conditioning frames see this, and the loss excludes them."""

    def construct(self, x, t, frame_mask=None, t0=None, num_frames: int = 1):
        shift, scale = split_rows(self.scale_shift_table[None] + t[:, None], 2)
        x_mod = t2i_modulate(self.norm_final(x), shift, scale)
        if frame_mask is not None:
            b, n, c = x.shape
            shift0, scale0 = split_rows(self.scale_shift_table[None] + t0[:, None], 2)
            x_zero = t2i_modulate(self.norm_final(x_mod), shift0, scale0)
            keep = frame_mask[:, :, None, None]
            x_mod = ops.where(keep, x_mod.reshape(b, num_frames, -1, c), x_zero.reshape(b, num_frames, -1, c))
            x_mod = x_mod.reshape(b, n, c)
        return self.linear(x_mod)


class STDiT2(nn.Cell):
    """construct(x, timestep, y, mask, drop=None, x_mask=None, height=None, width=None, fps=None,
    num_frames=None, ar=None):

    - x [B, C, T, H, W] latents; timestep [B]; y [B, 1, L, Ctext] T5 embeddings; mask [B, L] text key
      mask (1 = valid token); drop [B] bool caption dropout (y replaced by the null caption).
    - x_mask [B, T] bool: True = frame is noised and trained, False = conditioning frame, modulated
      with the t=0 embedding (OpenSora 1.1 frame masks). None = all True.
    - height, width [B] float: pixel size of the video (default: latent size * latent_downsample);
      they drive csize/ar conditioning and the position scale sqrt(h*w)/input_sq_size of sample 0
      (samples of a batch share one size, as the official buckets).
    - fps [B] float (default default_fps); num_frames [B] float (default: T of x, equal to pixel
      frames for the 2D SD VAE); ar [B] float (default width/height, as the official training data).

    Output [B, 2C, T, H, W] float32 (eps and the variance interpolation) when pred_sigma.
    Sizes that are not patch multiples are zero-padded and the output cropped, as the official."""

    def __init__(self, in_channels=4, patch_size=(1, 2, 2), hidden_size=1152, depth=28, num_heads=16,
                 mlp_ratio=4.0, caption_channels=4096, model_max_length=200, pred_sigma=True, qk_norm=True,
                 input_sq_size=512, rope_theta=10000.0, latent_downsample=8, default_fps=24.0):
        super().__init__()
        if hidden_size % 3 != 0 or hidden_size % 4 != 0:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by 3 (size conditioning) and 4 "
                             "(2D sin-cos positions)")
        self.patch_size = tuple(patch_size)
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if pred_sigma else in_channels
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.input_sq_size = float(input_sq_size)
        self.latent_downsample = float(latent_downsample)
        self.default_fps = float(default_fps)

        self.x_embedder = PatchEmbed3D(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.t_block = nn.SequentialCell([SiLU(), Linear(hidden_size, 6 * hidden_size, init=normal(0.02))])
        self.t_block_temp = nn.SequentialCell([SiLU(), Linear(hidden_size, 3 * hidden_size, init=normal(0.02))])
        self.y_embedder = CaptionEmbedder(caption_channels, hidden_size, model_max_length)
        self.rope = RotaryEmbedding(hidden_size // num_heads, rope_theta)
        self.blocks = nn.CellList([STDiT2Block(hidden_size, num_heads, mlp_ratio, qk_norm) for _ in range(depth)])
        self.final_layer = FrameMaskedFinalLayer(hidden_size, int(np.prod(self.patch_size)), self.out_channels)
        self.csize_embedder = SizeEmbedder(hidden_size // 3)
        self.ar_embedder = SizeEmbedder(hidden_size // 3)
        self.fl_embedder = SizeEmbedder(hidden_size)
        self.fps_embedder = SizeEmbedder(hidden_size)

    def construct(self, x, timestep, y, mask, drop=None, x_mask=None, height=None, width=None, fps=None,
                  num_frames=None, ar=None):
        dtype = self.x_embedder.proj.weight.dtype
        b, _, t_in, h_in, w_in = x.shape
        x = self.pad_to_patches(x.astype(dtype))
        grid = (x.shape[2] // self.patch_size[0], x.shape[3] // self.patch_size[1], x.shape[4] // self.patch_size[2])
        t_frames, s = grid[0], grid[1] * grid[2]

        # size conditioning (defaults documented above)
        if height is None:
            height = ops.full((b,), h_in * self.latent_downsample, dtype=ms.float32)
        if width is None:
            width = ops.full((b,), w_in * self.latent_downsample, dtype=ms.float32)
        if fps is None:
            fps = ops.full((b,), self.default_fps, dtype=ms.float32)
        if num_frames is None:
            num_frames = ops.full((b,), float(t_in), dtype=ms.float32)
        height, width = height.astype(ms.float32), width.astype(ms.float32)
        if ar is None:
            ar = width / height
        hw = ops.concat((height[:, None], width[:, None]), 1)
        data_info = ops.concat((self.csize_embedder(hw, dtype),
                                self.ar_embedder(ar.astype(ms.float32)[:, None], dtype)), 1)
        fl = (self.fl_embedder(num_frames.astype(ms.float32)[:, None], dtype)
              + self.fps_embedder(fps.astype(ms.float32)[:, None], dtype))

        # patches + spatial positions scaled by the pixel size of sample 0 (official)
        scale = ops.sqrt(height[0] * width[0]) / self.input_sq_size
        pos = spatial_pos_embed(self.hidden_size, grid[1:], scale, int(round(math.sqrt(s)))).astype(dtype)
        x = self.x_embedder(x).reshape(b, t_frames, s, self.hidden_size) + pos
        x = x.reshape(b, t_frames * s, self.hidden_size)

        t = self.t_embedder(timestep, dtype)
        t_spc = self.t_block(t + data_info)
        t_tmp = self.t_block_temp(t + fl)
        t0_info, t0_spc, t0_tmp = None, None, None
        if x_mask is not None:
            t0 = self.t_embedder(ops.zeros_like(timestep), dtype)
            t0_info = t0 + data_info
            t0_spc = self.t_block(t0_info)
            t0_tmp = self.t_block_temp(t0 + fl)

        y = self.y_embedder(y.astype(dtype), drop).squeeze(1)  # [B, L, C]
        for block in self.blocks:
            x = block(x, y, t_spc, t_tmp, mask, t_frames, self.rope, x_mask, t0_spc, t0_tmp)

        # plain t for trained frames; conditioning frames use t=0 with the size info (official)
        x = self.final_layer(x, t, x_mask, t0_info, t_frames)
        x = self.unpatchify(x, grid)
        return x[:, :, :t_in, :h_in, :w_in].astype(ms.float32)

    def pad_to_patches(self, x):
        """Zero-pads T, H, W at the end up to multiples of the patch size (concat: no pad kernel on CPU)."""
        for axis, p in ((2, self.patch_size[0]), (3, self.patch_size[1]), (4, self.patch_size[2])):
            extra = (p - x.shape[axis] % p) % p
            if extra:
                pad_shape = x.shape[:axis] + (extra,) + x.shape[axis + 1:]
                x = ops.concat((x, ops.zeros(pad_shape, x.dtype)), axis)
        return x

    def unpatchify(self, x, grid):
        """[B, T'*H'*W', pt*ph*pw*Cout] -> [B, Cout, T, H, W]."""
        b = x.shape[0]
        gt, gh, gw = grid
        pt, ph, pw = self.patch_size
        x = x.reshape(b, gt, gh, gw, pt, ph, pw, self.out_channels)
        x = x.transpose(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, self.out_channels, gt * pt, gh * ph, gw * pw)


def build_stdit2(**kwargs) -> STDiT2:
    """A declared (not allocated) STDiT2 from STDiT2's keyword arguments; XL/2 at the defaults."""
    if "patch_size" in kwargs:
        kwargs["patch_size"] = tuple(kwargs["patch_size"])
    with declare_only():
        return STDiT2(**kwargs)
