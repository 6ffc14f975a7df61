"""VideoCrafter2's UNet (lvdm openaimodel3d.UNetModel), T2V-Turbo's VC2 teacher, and the T2V-Turbo
student (+ `time_cond_proj`, the embedded guidance): parameter names, shapes and order exactly as
checkpoint_layouts/vc2_unet_teacher.txt (1,413,284,420; checkpoint prefix model.diffusion_model.)
and t2v_turbo_vc2_unet_student.txt (1,413,366,340). The official names keep the typo `temopral_conv`.

Latents [B, 4, T, H, W]; inside, frames are images [(B T), C, H, W] except in the temporal layers.
  timestep embedding: 320-d cos-first sinusoid (+ time_cond_proj(guidance embedding) for the
    student) -> time_embed; + fps_embedding(sinusoid of the fps); repeated per frame, as the text is
  input_blocks: a 3x3 conv, then per level (mult 1, 2, 4, 4) 2 x [ResBlock (+ a temporal conv
    block), where the level's downsampling is in attention_resolutions (1, 2, 4): SpatialTransformer
    (self-attention, cross-attention to the text, GEGLU FF) + TemporalTransformer (self-attention
    twice over the frames of each pixel)], a stride-2 conv between levels; `init_attn` (a temporal
    transformer with 8 heads and 1x1 Conv1d projections) after the first conv
  middle_block: ResBlock, SpatialTransformer, TemporalTransformer, ResBlock
  output_blocks: per level 3 x [ResBlock over the skip-concatenated input, the transformers], a
    nearest 2x upsample and conv between levels; out: GroupNorm, SiLU, 3x3 conv
64 channels per head; GroupNorm 32 groups (eps 1e-5 in ResBlocks, 1e-6 in transformers, over all
frames in temporal transformers); LayerNorm eps 1e-5. Zero-initialised as the official
zero_module: each ResBlock's last conv, each transformer's proj_out, each temporal conv block's last
conv, the output conv. Dropout: the temporal conv blocks' 0.1 is left out (our draws are keyed; an
in-graph dropout would break exact resume)."""
from mindspore import Tensor, nn, ops

from ..layers.conv import Conv2d, GroupNorm
from ..layers.embeddings import guidance_embedding, guidance_freqs, sinusoid_freqs, timestep_embedding
from ..layers.init import new_param, uniform_fan_in, zeros
from ..layers.ldm_attention import CrossAttention, FeedForward, zero_linear
from ..layers.linear import SiLU, torch_default_linear
from ..layers.norms import LayerNorm
from ..layers.sharding import ShardableLayer
from ..layers.video_unet import (GROUPS, Identity, TemporalConvBlock, attend_over_frames, frames_to_video, sequence,
                                 video_to_frames)

PRESETS = {
    "vc2": dict(in_channels=4, out_channels=4, model_channels=320, channel_mult=(1, 2, 4, 4), num_res_blocks=2,
                attention_resolutions=(4, 2, 1), head_channels=64, context_dim=1024, init_attn_heads=8,
                time_cond_proj_dim=None),
    "vc2-turbo": dict(in_channels=4, out_channels=4, model_channels=320, channel_mult=(1, 2, 4, 4), num_res_blocks=2,
                      attention_resolutions=(4, 2, 1), head_channels=64, context_dim=1024, init_attn_heads=8,
                      time_cond_proj_dim=256),
    # the same code at a few million parameters: three levels, the last without attention, as the
    # full model's deepest level; 8 GroupNorm groups, so that a group holds several channels (with
    # one channel per group the ResBlocks' per-channel embedding would be normalised away)
    "tiny": dict(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                 attention_resolutions=(1, 2), head_channels=16, context_dim=32, init_attn_heads=2,
                 time_cond_proj_dim=None, norm_groups=8),
}
class PointwiseConv1d(ShardableLayer):
    """nn.Conv1d with kernel 1 (weight [out, in, 1]) over tokens [..., in]: a Linear with a conv's shape."""

    def __init__(self, in_channels: int, out_channels: int, zero: bool = False):
        super().__init__()
        init = zeros if zero else uniform_fan_in(in_channels)
        self.weight = new_param((out_channels, in_channels, 1), init)
        self.bias = new_param((out_channels,), init)

    def construct(self, x):
        w = self.read("weight", self.weight)
        return ops.dense(x, w.reshape(w.shape[0], w.shape[1]), self.read("bias", self.bias))


# ---- the layers of a block: each called as layer(x, emb, context, frames) -----------------------

class ResBlock(nn.Cell):
    """GroupNorm-SiLU-conv, + the embedding's projection, GroupNorm-SiLU-conv, + the (1x1-projected)
    input; then the temporal conv block over the frames."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int = None, temporal_conv: bool = True,
                 groups: int = GROUPS):
        super().__init__()
        out = out_channels or channels
        self.in_layers = sequence(GroupNorm(groups, channels, 1e-5), SiLU(), Conv2d(channels, out, 3, padding=1))
        self.emb_layers = sequence(SiLU(), torch_default_linear(emb_channels, out))
        self.out_layers = sequence(GroupNorm(groups, out, 1e-5), SiLU(), Identity(),
                                   Conv2d(out, out, 3, padding=1, zero=True))
        self.skip_connection = Conv2d(channels, out, 1) if out != channels else None
        self.temopral_conv = TemporalConvBlock(out, groups) if temporal_conv else None

    def construct(self, x, emb, context, frames: int):
        h = self.in_layers(x) + self.emb_layers(emb).astype(x.dtype)[:, :, None, None]
        h = self.out_layers(h)
        h = h + (x if self.skip_connection is None else self.skip_connection(x))
        if self.temopral_conv is not None:
            h = video_to_frames(self.temopral_conv(frames_to_video(h, frames)))
        return h


class Downsample(nn.Cell):
    def __init__(self, channels: int):
        super().__init__()
        self.op = Conv2d(channels, channels, 3, stride=2, padding=1)

    def construct(self, x, emb, context, frames: int):
        return self.op(x)


class Upsample(nn.Cell):
    """Nearest 2x, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def construct(self, x, emb, context, frames: int):
        return self.conv(ops.repeat_interleave(ops.repeat_interleave(x, 2, 2), 2, 3))


class BasicTransformerBlock(nn.Cell):
    """x + attn1(norm1 x); x + attn2(norm2 x, context); x + ff(norm3 x). Registered as lvdm does:
    attn1, ff, attn2, then the norms. context_dim None: attn2 attends to x too."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int = None):
        super().__init__()
        self.attn1 = CrossAttention(dim, None, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1 = LayerNorm(dim, eps=1e-5)
        self.norm2 = LayerNorm(dim, eps=1e-5)
        self.norm3 = LayerNorm(dim, eps=1e-5)

    def construct(self, x, context=None):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Cell):
    """Per frame: GroupNorm, Linear in, the blocks over the h*w tokens (cross-attention to the
    frame's text), Linear out, + the input."""

    def __init__(self, channels: int, heads: int, dim_head: int, context_dim: int, groups: int = GROUPS):
        super().__init__()
        inner = heads * dim_head
        self.norm = GroupNorm(groups, channels, 1e-6)
        self.proj_in = torch_default_linear(channels, inner)
        self.transformer_blocks = nn.CellList([BasicTransformerBlock(inner, heads, dim_head, context_dim)])
        self.proj_out = zero_linear(inner, channels)

    def construct(self, x, emb, context, frames: int):
        bt, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).reshape(bt, c, h * w).transpose(0, 2, 1))
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        return self.proj_out(tokens).transpose(0, 2, 1).reshape(bt, c, h, w) + x


class TemporalTransformer(nn.Cell):
    """GroupNorm over the whole clip, then per pixel the blocks over its T frames (self-attention
    in attn1 and attn2: temporal_selfatt_only), + the input. Projections: Linear (use_linear, the
    level transformers) or 1x1 Conv1d (init_attn)."""

    def __init__(self, channels: int, heads: int, dim_head: int, linear: bool = True, groups: int = GROUPS):
        super().__init__()
        inner = heads * dim_head
        self.norm = GroupNorm(groups, channels, 1e-6)
        self.proj_in = torch_default_linear(channels, inner) if linear else PointwiseConv1d(channels, inner)
        self.transformer_blocks = nn.CellList([BasicTransformerBlock(inner, heads, dim_head)])
        self.proj_out = zero_linear(inner, channels) if linear else PointwiseConv1d(inner, channels, zero=True)

    def construct(self, x, emb, context, frames: int):
        return attend_over_frames(x, frames, self.norm, self.proj_in, self.transformer_blocks, self.proj_out)


class Blocks(nn.SequentialCell):
    """lvdm's TimestepEmbedSequential: a plain conv is called on x, every other layer as
    layer(x, emb, context, frames)."""

    def __init__(self, layers):
        super().__init__(list(layers))

    def construct(self, x, emb, context, frames: int):
        for layer in self.cell_list:
            if isinstance(layer, Conv2d):
                x = layer(x)
            else:
                x = layer(x, emb, context, frames)
        return x


# ---- the UNet -----------------------------------------------------------------------------------

class VC2UNet(nn.Cell):
    def __init__(self, in_channels: int = 4, out_channels: int = 4, model_channels: int = 320,
                 channel_mult=(1, 2, 4, 4), num_res_blocks: int = 2, attention_resolutions=(4, 2, 1),
                 head_channels: int = 64, context_dim: int = 1024, init_attn_heads: int = 8,
                 time_cond_proj_dim: int = None, norm_groups: int = GROUPS):
        super().__init__()
        emb, g = model_channels * 4, norm_groups
        self.model_channels = model_channels
        self.time_embed = sequence(torch_default_linear(model_channels, emb), SiLU(), torch_default_linear(emb, emb))
        self.fps_embedding = sequence(torch_default_linear(model_channels, emb), SiLU(), torch_default_linear(emb, emb))
        self.time_cond_proj = (torch_default_linear(time_cond_proj_dim, model_channels, bias=False)
                               if time_cond_proj_dim else None)
        self.freqs = Tensor(sinusoid_freqs(model_channels))
        if time_cond_proj_dim:
            self.guidance_freqs = Tensor(guidance_freqs(time_cond_proj_dim))  # layers/embeddings.py

        def transformers(ch):
            heads = ch // head_channels
            return [SpatialTransformer(ch, heads, head_channels, context_dim, groups=g),
                    TemporalTransformer(ch, heads, head_channels, groups=g)]

        blocks, skips, ch, ds = [Blocks([Conv2d(in_channels, model_channels, 3, padding=1)])], [model_channels], model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, emb, mult * model_channels, groups=g)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers += transformers(ch)
                blocks.append(Blocks(layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                blocks.append(Blocks([Downsample(ch)]))
                skips.append(ch)
                ds *= 2
        self.input_blocks = nn.CellList(blocks)
        self.init_attn = Blocks([TemporalTransformer(model_channels, init_attn_heads, head_channels, linear=False,
                                                     groups=g)])
        self.middle_block = Blocks([ResBlock(ch, emb, groups=g), *transformers(ch), ResBlock(ch, emb, groups=g)])
        blocks = []
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), emb, mult * model_channels, groups=g)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers += transformers(ch)
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                blocks.append(Blocks(layers))
        self.output_blocks = nn.CellList(blocks)
        self.out = sequence(GroupNorm(g, ch, 1e-5), SiLU(), Conv2d(model_channels, out_channels, 3, padding=1,
                                                                         zero=True))

    def embed(self, timesteps, fps, guidance=None):
        """The time embedding [B, 4 * model_channels] of timesteps, fps and the student's guidance
        scale w (T2V-Turbo's guidance_scale_embedding: a sin-first sinusoid of 1000 w). Without a
        guidance the student computes as its teacher (the base the distillation shares)."""
        t = timestep_embedding(timesteps, self.freqs)
        if self.time_cond_proj is not None and guidance is not None:
            w = guidance_embedding(guidance, self.guidance_freqs)
            t = t + self.time_cond_proj(w.astype(t.dtype))
        return self.time_embed(t) + self.fps_embedding(timestep_embedding(fps, self.freqs))

    def construct(self, x, timesteps, context, fps, guidance=None):
        """x [B, C, T, H, W], timesteps [B], context [B, L, context_dim], fps [B], guidance [B]
        (the student's embedded guidance scale) -> eps [B, C, T, H, W]."""
        b, _, frames, _, _ = x.shape
        dtype = x.dtype
        emb = ops.repeat_interleave(self.embed(timesteps, fps, guidance).astype(dtype), frames, 0)
        context = ops.repeat_interleave(context.astype(dtype), frames, 0)
        h = video_to_frames(x)
        skips = []
        for i, block in enumerate(self.input_blocks):
            h = block(h, emb, context, frames)
            if i == 0:
                h = self.init_attn(h, emb, context, frames)
            skips.append(h)
        h = self.middle_block(h, emb, context, frames)
        n = len(skips)
        for j, block in enumerate(self.output_blocks):
            h = block(ops.cat((h, skips[n - 1 - j]), 1), emb, context, frames)
        return frames_to_video(self.out(h), frames)


def build_vc2_unet(preset: str = "vc2", **overrides) -> VC2UNet:
    return VC2UNet(**{**PRESETS[preset], **overrides})
