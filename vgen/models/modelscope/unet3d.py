"""ModelScope text-to-video-ms-1.7b's UNet3DConditionModel (diffusers), T2V-Turbo's ModelScope
teacher, and the T2V-Turbo ModelScope student (+ `time_embedding.cond_proj`, 256 -> 320, no bias:
the embedded guidance scale). Parameter names, shapes and order exactly as
tests/layouts/modelscope_t2v_1.7b_unet3d_teacher.txt (1,411,233,860) and
t2v_turbo_ms_unet3d_student.txt (1,411,315,780). The official forward is T2V-Turbo's copy
(model_scope/unet_3d_condition.py, unet_3d_blocks.py, from ExponentialML's Text-To-Video-Finetuning)
over diffusers 0.30 layers (T2V-Turbo pins diffusers==0.30.0).

Order: conv_in, time_embedding (linear_1, [cond_proj], linear_2), transformer_in, down_blocks,
up_blocks, mid_block (registered after up_blocks, as the official ModuleLists are created first),
conv_norm_out, conv_out. Each block: resnets, temp_convs, [attentions, temp_attentions],
[downsamplers.0.conv | upsamplers.0.conv].

Latents [B, 4, T, H, W]; inside, frames are images [(B T), C, H, W] (the official num_frames reshapes).
  time: Timesteps(320, flip_sin_to_cos=True, downscale_freq_shift=0): cos-first sinusoid with
    freqs exp(-ln(1e4) k / 160); the student adds cond_proj(its guidance scale's embedding, as
    T2V-Turbo's guidance_scale_embedding) to it before linear_1 (diffusers TimestepEmbedding with
    cond_proj_dim); repeated per frame, as the text is
  conv_in 3x3, padding 1 (the same kernel as diffusers' own UNet3DConditionModel); then
    transformer_in: TransformerTemporalModel, 8 heads of 64 over 320 channels (inner 512)
  down: 3 x CrossAttnDownBlock3D + DownBlock3D, 2 layers each: ResnetBlock2D, TemporalConvLayer,
    [Transformer2DModel, TransformerTemporalModel]; Downsample2D (3x3 conv, stride 2, padding 1,
    so no extra asymmetric pad) after all but the last
  mid: resnet, temp conv, [attention, temporal attention, resnet, temp conv]
  up: UpBlock3D + 3 x CrossAttnUpBlock3D, 3 layers each over the skip-concatenated input,
    Upsample2D (nearest 2x, 3x3 conv padding 1) after all but the last
  out: GroupNorm(32, eps 1e-5), SiLU, 3x3 conv
T2V-Turbo's copy runs transformer_in, every temp conv and temporal attention only when T > 1 (except
the mid block's first temp conv, which always runs); diffusers' own UNet3DConditionModel always runs
them. No attention masks: the official blocks ignore attention_mask and T2V-Turbo passes none.

Transformer2DModel: use_linear_projection=True for this checkpoint (proj_in / proj_out are [C, C]
Linears, not 1x1 convs): GroupNorm(32, eps 1e-6) per frame, tokens in (h, w) order, Linear in,
BasicTransformerBlock, Linear out, + the input. TransformerTemporalModel: GroupNorm(32, eps 1e-6)
over the whole clip [B, C, T, H, W], tokens [(B H W), T, C], Linear in, the block, Linear out, + the
input; double_self_attention: attn2 attends to the frames too (its cross_attention_dim of 1024 is
unused, to_k is [C, C]). Heads: C // 64 of 64 channels (spatial and temporal). BasicTransformerBlock
(layer_norm, eps 1e-5): x + attn1(norm1 x); x + attn2(norm2 x, text); x + ff(norm3 x), registered
norm1, attn1, norm2, attn2, norm3, ff; GEGLU (exact GELU). ResnetBlock2D: GroupNorm(32, eps 1e-5),
SiLU, conv1, + time_emb_proj(SiLU emb), GroupNorm, SiLU, conv2, + input (conv_shortcut 1x1 when
channels change); output_scale_factor 1. TemporalConvLayer: conv1..conv4 (GroupNorm(32, eps 1e-5),
SiLU, [Dropout], Conv3d (3, 1, 1) padding (1, 0, 0)), + the input.

Init as diffusers: PyTorch defaults everywhere, only each TemporalConvLayer's conv4 conv is zero
(weight and bias); unlike lvdm (the VC2 UNet) no proj_out, resnet conv2 or conv_out is zeroed.
TemporalConvLayer is the VC2 file's TemporalConvBlock (same conv1..conv4 names and indices, eps,
zero conv4; Conv3d in/out swapped in diffusers' conv2..4, equal here). Dropout: the temporal convs'
0.1 is left out (parameterless Identity places, as the VC2 file: our draws are keyed and an in-graph
dropout would break exact resume); the other dropouts are 0.

Beyond names, what differs from the VC2 UNet: no fps embedding; transformer_in has Linear
projections (VC2's init_attn: 1x1 Conv1d); transformer blocks registered norm1, attn1, norm2, attn2,
norm3, ff (lvdm: attn1, ff, attn2, norms); no zero_module inits; the T > 1 gating.
"""
from mindspore import Tensor, nn, ops

from ..layers.conv import Conv2d, GroupNorm
from ..layers.embeddings import guidance_embedding, guidance_freqs, sinusoid_freqs, timestep_embedding
from ..layers.ldm_attention import CrossAttention, FeedForward
from ..layers.linear import SiLU, torch_default_linear
from ..layers.norms import LayerNorm
from ..layers.video_unet import TemporalConvBlock, attend_over_frames, frames_to_video, video_to_frames
from ..videocrafter.unet import Upsample

MS_17B = dict(in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
              down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
              up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
              cross_attention_dim=1024, attention_head_dim=64, transformer_in_heads=8, norm_num_groups=32,
              norm_eps=1e-5, time_cond_proj_dim=None)
PRESETS = {
    "ms-1.7b": MS_17B,
    "ms-1.7b-turbo": {**MS_17B, "time_cond_proj_dim": 256},
    # the same code at a few million parameters: three levels, the deepest without attention as
    # the full model's
    "tiny": {**MS_17B, "block_out_channels": (32, 64, 64), "layers_per_block": 1,
             "down_block_types": ("CrossAttnDownBlock3D",) * 2 + ("DownBlock3D",),
             "up_block_types": ("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 2,
             "cross_attention_dim": 32, "attention_head_dim": 16, "transformer_in_heads": 2},
}


def over_frames(temp_conv, x, frames: int):
    """A TemporalConvLayer on frames [(B T), C, H, W] (the block itself works on [B, C, T, H, W])."""
    return video_to_frames(temp_conv(frames_to_video(x, frames)))


# ---- layers -------------------------------------------------------------------------------------

class TransformerBlock(nn.Cell):
    """diffusers' BasicTransformerBlock (layer_norm). cross_attention_dim None: attn2 is
    self-attention (double_self_attention)."""

    def __init__(self, dim: int, heads: int, dim_head: int, cross_attention_dim: int = None):
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=1e-5)
        self.attn1 = CrossAttention(dim, None, heads, dim_head)
        self.norm2 = LayerNorm(dim, eps=1e-5)
        self.attn2 = CrossAttention(dim, cross_attention_dim, heads, dim_head)
        self.norm3 = LayerNorm(dim, eps=1e-5)
        self.ff = FeedForward(dim)

    def construct(self, x, context=None):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class Transformer2D(nn.Cell):
    """Transformer2DModel with use_linear_projection: per frame over its h*w tokens, cross-attending
    to the frame's text. [(B T), C, H, W]."""

    def __init__(self, channels: int, heads: int, dim_head: int, cross_attention_dim: int, groups: int = 32):
        super().__init__()
        inner = heads * dim_head
        self.norm = GroupNorm(groups, channels, 1e-6)
        self.proj_in = torch_default_linear(channels, inner)
        self.transformer_blocks = nn.CellList([TransformerBlock(inner, heads, dim_head, cross_attention_dim)])
        self.proj_out = torch_default_linear(inner, channels)

    def construct(self, x, context):
        bt, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).transpose(0, 2, 3, 1).reshape(bt, h * w, c))
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        return self.proj_out(tokens).reshape(bt, h, w, c).transpose(0, 3, 1, 2) + x


class TransformerTemporal(nn.Cell):
    """TransformerTemporalModel: GroupNorm over the whole clip, then per pixel the block over its
    T frames (no text), + the input. [(B T), C, H, W]."""

    def __init__(self, channels: int, heads: int, dim_head: int, groups: int = 32):
        super().__init__()
        inner = heads * dim_head
        self.norm = GroupNorm(groups, channels, 1e-6)
        self.proj_in = torch_default_linear(channels, inner)
        self.transformer_blocks = nn.CellList([TransformerBlock(inner, heads, dim_head)])
        self.proj_out = torch_default_linear(inner, channels)

    def construct(self, x, frames: int):
        return attend_over_frames(x, frames, self.norm, self.proj_in, self.transformer_blocks, self.proj_out)


class ResnetBlock2D(nn.Cell):
    def __init__(self, channels: int, out_channels: int, temb_channels: int, groups: int = 32, eps: float = 1e-5):
        super().__init__()
        self.norm1 = GroupNorm(groups, channels, eps)
        self.conv1 = Conv2d(channels, out_channels, 3, padding=1)
        self.time_emb_proj = torch_default_linear(temb_channels, out_channels)
        self.norm2 = GroupNorm(groups, out_channels, eps)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = Conv2d(channels, out_channels, 1) if channels != out_channels else None

    def construct(self, x, emb):
        h = self.conv1(ops.silu(self.norm1(x)))
        h = h + self.time_emb_proj(ops.silu(emb)).astype(h.dtype)[:, :, None, None]
        h = self.conv2(ops.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Downsample2D(nn.Cell):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=1)

    def construct(self, x):
        return self.conv(x)


class TimestepEmbedding(nn.Cell):
    """linear_1, SiLU, linear_2; cond_proj(condition) is added to the sinusoid first (student)."""

    def __init__(self, in_channels: int, time_embed_dim: int, cond_proj_dim: int = None):
        super().__init__()
        self.linear_1 = torch_default_linear(in_channels, time_embed_dim)
        self.cond_proj = torch_default_linear(cond_proj_dim, in_channels, bias=False) if cond_proj_dim else None
        self.linear_2 = torch_default_linear(time_embed_dim, time_embed_dim)

    def construct(self, sample, condition=None):
        if self.cond_proj is not None and condition is not None:  # none: the teacher's embedding
            sample = sample + self.cond_proj(condition.astype(sample.dtype))
        return self.linear_2(ops.silu(self.linear_1(sample)))


# ---- blocks ---------------------------------------------------------------------------------------

def _transformers(ch, head_dim, cross_attention_dim, groups):
    heads = ch // head_dim
    return Transformer2D(ch, heads, head_dim, cross_attention_dim, groups), TransformerTemporal(ch, heads, head_dim,
                                                                                             groups)


def _add_layers_after_resnets(block, channels, layers, attention, head_dim, cross_attention_dim, groups):
    """A down or up block's temp_convs, then (with attention) attentions and temp_attentions, one
    per resnet, registered in the official order."""
    block.temp_convs = nn.CellList([TemporalConvBlock(channels, groups) for _ in range(layers)])
    block.attentions = block.temp_attentions = None
    if attention:
        pairs = [_transformers(channels, head_dim, cross_attention_dim, groups) for _ in range(layers)]
        block.attentions = nn.CellList([p[0] for p in pairs])
        block.temp_attentions = nn.CellList([p[1] for p in pairs])


class DownBlock3D(nn.Cell):
    """CrossAttnDownBlock3D (attention=True) or DownBlock3D. Returns (x, the skip states)."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, layers: int, attention: bool,
                 downsample: bool, head_dim: int, cross_attention_dim: int, groups: int, eps: float):
        super().__init__()
        self.resnets = nn.CellList([ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels,
                                                  temb_channels, groups, eps) for i in range(layers)])
        _add_layers_after_resnets(self, out_channels, layers, attention, head_dim, cross_attention_dim, groups)
        self.downsamplers = nn.CellList([Downsample2D(out_channels)]) if downsample else None

    def construct(self, x, emb, context, frames: int):
        outputs = ()
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, emb)
            if frames > 1:
                x = over_frames(self.temp_convs[i], x, frames)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
                if frames > 1:
                    x = self.temp_attentions[i](x, frames)
            outputs = outputs + (x,)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            outputs = outputs + (x,)
        return x, outputs


class UpBlock3D(nn.Cell):
    """CrossAttnUpBlock3D (attention=True) or UpBlock3D over the skip states (the last is used
    first), passed as separate tensors: a recomputed block's inputs may not be a tuple."""

    def __init__(self, in_channels: int, prev_output_channels: int, out_channels: int, temb_channels: int,
                 layers: int, attention: bool, upsample: bool, head_dim: int, cross_attention_dim: int, groups: int,
                 eps: float):
        super().__init__()
        resnets = []
        for i in range(layers):
            skip = in_channels if i == layers - 1 else out_channels
            resnets.append(ResnetBlock2D((prev_output_channels if i == 0 else out_channels) + skip, out_channels,
                                         temb_channels, groups, eps))
        self.resnets = nn.CellList(resnets)
        _add_layers_after_resnets(self, out_channels, layers, attention, head_dim, cross_attention_dim, groups)
        self.upsamplers = nn.CellList([Upsample(out_channels)]) if upsample else None

    def construct(self, x, emb, context, frames: int, *skips):
        n = len(skips)
        for i, resnet in enumerate(self.resnets):
            x = resnet(ops.cat((x, skips[n - 1 - i]), 1), emb)
            if frames > 1:
                x = over_frames(self.temp_convs[i], x, frames)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
                if frames > 1:
                    x = self.temp_attentions[i](x, frames)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, emb, context, frames)  # the VC2 Upsample: nearest 2x, 3x3 conv `conv`
        return x


class UNetMidBlock3DCrossAttn(nn.Cell):
    def __init__(self, channels: int, temb_channels: int, head_dim: int, cross_attention_dim: int, groups: int,
                 eps: float):
        super().__init__()
        self.resnets = nn.CellList([ResnetBlock2D(channels, channels, temb_channels, groups, eps) for _ in range(2)])
        self.temp_convs = nn.CellList([TemporalConvBlock(channels, groups) for _ in range(2)])
        attention, temporal = _transformers(channels, head_dim, cross_attention_dim, groups)
        self.attentions = nn.CellList([attention])
        self.temp_attentions = nn.CellList([temporal])

    def construct(self, x, emb, context, frames: int):
        x = over_frames(self.temp_convs[0], self.resnets[0](x, emb), frames)  # ungated in the official forward
        x = self.attentions[0](x, context)
        if frames > 1:
            x = self.temp_attentions[0](x, frames)
        x = self.resnets[1](x, emb)
        if frames > 1:
            x = over_frames(self.temp_convs[1], x, frames)
        return x


# ---- the UNet -----------------------------------------------------------------------------------

class Timesteps(nn.Cell):
    """flip_sin_to_cos=True, downscale_freq_shift=0: [cos | sin] of t * exp(-ln(1e4) k / (dim/2))."""

    def __init__(self, dim: int):
        super().__init__()
        self.freqs = Tensor(sinusoid_freqs(dim))

    def construct(self, t):
        return timestep_embedding(t, self.freqs)


class MSUNet3D(nn.Cell):
    def __init__(self, in_channels: int = 4, out_channels: int = 4, block_out_channels=(320, 640, 1280, 1280),
                 layers_per_block: int = 2, down_block_types=MS_17B["down_block_types"],
                 up_block_types=MS_17B["up_block_types"], cross_attention_dim: int = 1024,
                 attention_head_dim: int = 64, transformer_in_heads: int = 8, norm_num_groups: int = 32,
                 norm_eps: float = 1e-5, time_cond_proj_dim: int = None):
        super().__init__()
        known_down, known_up = ("CrossAttnDownBlock3D", "DownBlock3D"), ("CrossAttnUpBlock3D", "UpBlock3D")
        if not (len(down_block_types) == len(up_block_types) == len(block_out_channels)) or \
                any(t not in known_down for t in down_block_types) or any(t not in known_up for t in up_block_types):
            raise ValueError(f"block types {down_block_types} / {up_block_types} for {block_out_channels}")
        c0, n = block_out_channels[0], len(block_out_channels)
        temb = c0 * 4
        kw = dict(head_dim=attention_head_dim, cross_attention_dim=cross_attention_dim, groups=norm_num_groups,
                  eps=norm_eps)
        self.conv_in = Conv2d(in_channels, c0, 3, padding=1)
        self.time_proj = Timesteps(c0)
        self.time_embedding = TimestepEmbedding(c0, temb, time_cond_proj_dim)
        self.guidance_freqs = Tensor(guidance_freqs(time_cond_proj_dim)) if time_cond_proj_dim else None
        # the official passes no norm_num_groups here: TransformerTemporalModel's default 32
        self.transformer_in = TransformerTemporal(c0, transformer_in_heads, attention_head_dim, 32)

        down, ch = [], c0
        for i, kind in enumerate(down_block_types):
            down.append(DownBlock3D(ch, block_out_channels[i], temb, layers_per_block, kind.startswith("CrossAttn"),
                                    i < n - 1, **kw))
            ch = block_out_channels[i]
        up, rev = [], block_out_channels[::-1]
        for i, kind in enumerate(up_block_types):
            up.append(UpBlock3D(rev[min(i + 1, n - 1)], ch, rev[i], temb, layers_per_block + 1,
                                kind.startswith("CrossAttn"), i < n - 1, **kw))
            ch = rev[i]
        self.down_blocks = nn.CellList(down)
        self.up_blocks = nn.CellList(up)
        self.mid_block = UNetMidBlock3DCrossAttn(block_out_channels[-1], temb, **kw)
        self.conv_norm_out = GroupNorm(norm_num_groups, c0, norm_eps)
        self.conv_act = SiLU()
        self.conv_out = Conv2d(c0, out_channels, 3, padding=1)

    def embed(self, timesteps, guidance=None):
        """The time embedding [B, 4 * block_out_channels[0]]; the student adds cond_proj of its
        guidance scales' embedding (guidance_embedding, as T2V-Turbo's guidance_scale_embedding);
        without a guidance it computes as its teacher (the base the distillation shares)."""
        cond = None
        if self.guidance_freqs is not None and guidance is not None:
            cond = guidance_embedding(guidance, self.guidance_freqs)
        return self.time_embedding(self.time_proj(timesteps), cond)

    def construct(self, x, timesteps, context, guidance=None):
        """x [B, C, T, H, W] (H, W multiples of 2^(levels - 1): the official upsample_size path for
        other sizes is not implemented), timesteps [B], context [B, L, cross_attention_dim],
        guidance [B] (the student's embedded guidance scale) -> eps [B, C, T, H, W]."""
        frames = x.shape[2]
        dtype = x.dtype
        emb = ops.repeat_interleave(self.embed(timesteps, guidance).astype(dtype), frames, 0)
        context = ops.repeat_interleave(context.astype(dtype), frames, 0)
        h = self.conv_in(video_to_frames(x))
        if frames > 1:
            h = self.transformer_in(h, frames)
        skips = (h,)
        for block in self.down_blocks:
            h, states = block(h, emb, context, frames)
            skips = skips + states
        h = self.mid_block(h, emb, context, frames)
        for block in self.up_blocks:
            k = len(skips) - len(block.resnets)
            h = block(h, emb, context, frames, *skips[k:])
            skips = skips[:k]
        h = self.conv_out(self.conv_act(self.conv_norm_out(h)))
        return frames_to_video(h, frames)


def build_ms_unet3d(preset: str = "ms-1.7b", **overrides) -> MSUNet3D:
    return MSUNet3D(**{**PRESETS[preset], **overrides})
