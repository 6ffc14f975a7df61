"""OpenSora 1.0 STDiT: spatial-temporal DiT with PixArt adaLN-single, parameter names and shapes
exactly as the official checkpoints (checkpoint_layouts/opensora_v1_0_stdit_xl2_16x256x256.txt).

Token layout: x [B, T*S, C] with S = H'*W' tokens per frame, frames outermost. The spatial branch
attends within a frame, the temporal branch across frames at one spatial position.
"""
import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ..layers.attention import CrossAttention, SelfAttention
from ..layers.embeddings import CaptionEmbedder, PatchEmbed3D, TimestepEmbedder, sincos_1d, sincos_2d
from ..layers.init import constant, new_param, normal, zeros
from ..layers.linear import Linear, Mlp, SiLU
from ..layers.modulation import T2IFinalLayer, split_rows, t2i_modulate
from ..layers.norms import LayerNorm
from ..layers.seams import GatherSeam, SplitSeam


def frames_to_batch(x, t: int, s: int):
    """[B, T*S, C] -> [B*T, S, C]: one sequence per frame."""
    b, _, c = x.shape
    return x.reshape(b * t, s, c)


def batch_to_frames(x, b: int):
    bt, s, c = x.shape
    return x.reshape(b, (bt // b) * s, c)


def positions_to_batch(x, t: int, s: int):
    """[B, T*S, C] -> [B*S, T, C]: one sequence per spatial position."""
    b, _, c = x.shape
    return x.reshape(b, t, s, c).transpose(0, 2, 1, 3).reshape(b * s, t, c)


def batch_to_positions(x, b: int):
    bs, t, c = x.shape
    s = bs // b
    return x.reshape(b, s, t, c).transpose(0, 2, 1, 3).reshape(b, t * s, c)


class STDiTBlock(nn.Cell):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.hidden_size = hidden_size
        self.norm1 = LayerNorm(hidden_size, 1e-6, affine=False)
        self.attn = SelfAttention(hidden_size, num_heads, qkv_bias=True)
        self.cross_attn = CrossAttention(hidden_size, num_heads)
        self.norm2 = LayerNorm(hidden_size, 1e-6, affine=False)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.scale_shift_table = new_param((6, hidden_size), normal(hidden_size ** -0.5))
        self.attn_temp = SelfAttention(hidden_size, num_heads, qkv_bias=True)
        # zero-init as the official model: cross-attn and temporal outputs start at 0
        for p in (self.cross_attn.proj.weight, self.cross_attn.proj.bias,
                  self.attn_temp.proj.weight, self.attn_temp.proj.bias):
            p.init_fn = zeros

    def construct(self, x, y, t0, y_mask, num_frames: int, tpe=None, frame_mask=None):
        b, n, c = x.shape
        s = n // num_frames
        mod = self.scale_shift_table[None] + t0.reshape(b, 6, c)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = split_rows(mod, 6)

        # spatial branch: within each frame
        x_m = t2i_modulate(self.norm1(x), shift_msa, scale_msa)
        x_s = self.attn(frames_to_batch(x_m, num_frames, s))
        x = x + gate_msa * batch_to_frames(x_s, b)

        # temporal branch: un-normalised x, no modulation of its own, reuses gate_msa
        x_t = positions_to_batch(x, num_frames, s)
        if tpe is not None:
            x_t = x_t + tpe
        key_mask = None if frame_mask is None else ops.broadcast_to(frame_mask[None], (x_t.shape[0], num_frames))
        x_t = self.attn_temp(x_t, key_mask=key_mask)
        x = x + gate_msa * batch_to_positions(x_t, b)

        x = x + self.cross_attn(x, y, y_mask)
        x = x + gate_mlp * self.mlp(t2i_modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class STDiT(nn.Cell):
    """Inputs: x [B, C, T, H, W] latents, timestep [B], y [B, 1, L, Ctext] text embeddings,
    mask [B, L] (1 = valid token), drop [B] (caption dropout: y replaced by the null caption).
    Output [B, 2C, T, H, W] (eps and the variance interpolation) when pred_sigma."""

    def __init__(self, input_size=(16, 32, 32), in_channels=4, patch_size=(1, 2, 2), hidden_size=1152, depth=28,
                 num_heads=16, mlp_ratio=4.0, caption_channels=4096, model_max_length=120, pred_sigma=True,
                 space_scale=1.0, time_scale=1.0):
        super().__init__()
        self.input_size = tuple(input_size)
        self.patch_size = tuple(patch_size)
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if pred_sigma else in_channels
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        grid = [self.input_size[i] // self.patch_size[i] for i in range(3)]
        self.num_temporal = grid[0]
        self.num_spatial = grid[1] * grid[2]

        self.pos_embed = new_param((1, self.num_spatial, hidden_size), constant(
            lambda: sincos_2d(hidden_size, (grid[1], grid[2]), scale=space_scale)), derived=True)
        self.pos_embed_temporal = new_param((1, self.num_temporal, hidden_size), constant(
            lambda: sincos_1d(hidden_size, grid[0], scale=time_scale)), derived=True)
        self.x_embedder = PatchEmbed3D(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.t_block = nn.SequentialCell([SiLU(), Linear(hidden_size, 6 * hidden_size, init=normal(0.02))])
        self.y_embedder = CaptionEmbedder(caption_channels, hidden_size, model_max_length)
        self.blocks = nn.CellList([STDiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = T2IFinalLayer(hidden_size, int(np.prod(self.patch_size)), self.out_channels)
        # where frames may be split across workers (sequence parallelism) and gathered again
        self.split_frames = SplitSeam(axis=1)
        self.gather_frames = GatherSeam(axis=1)

    def construct(self, x, timestep, y, mask, drop=None):
        dtype = self.x_embedder.proj.weight.dtype
        b = x.shape[0]
        grid = (x.shape[2] // self.patch_size[0], x.shape[3] // self.patch_size[1], x.shape[4] // self.patch_size[2])
        t_frames = grid[0]
        x = self.x_embedder(x.astype(dtype))  # [B, T*S, C]
        x = (x.reshape(b, t_frames, -1, self.hidden_size) + self.pos_embed.astype(dtype)[:, None])
        tpe = self.pos_embed_temporal.astype(dtype)
        # this rank's frames (all of them unless split; padded to a multiple of the split, masked)
        x, tpe = self.split_frames(x), self.split_frames(tpe)
        frame_mask = self.split_frames.valid(t_frames, ms.float32)
        local_frames = x.shape[1]
        x = x.reshape(b, -1, self.hidden_size)

        t = self.t_embedder(timestep, dtype)
        t0 = self.t_block(t)
        y = self.y_embedder(y.astype(dtype), drop).squeeze(1)  # [B, L, C]

        for i, block in enumerate(self.blocks):
            x = block(x, y, t0, mask, local_frames, tpe if i == 0 else None, frame_mask)

        x = self.final_layer(x, t)
        x = self.gather_frames(x.reshape(b, local_frames, -1, x.shape[-1]), t_frames).reshape(b, -1, x.shape[-1])
        return self.unpatchify(x, grid).astype(ms.float32)

    def unpatchify(self, x, grid):
        """[B, T'*H'*W', pt*ph*pw*Cout] -> [B, Cout, T, H, W]."""
        b = x.shape[0]
        gt, gh, gw = grid
        pt, ph, pw = self.patch_size
        x = x.reshape(b, gt, gh, gw, pt, ph, pw, self.out_channels)
        x = x.transpose(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, self.out_channels, gt * pt, gh * ph, gw * pw)
