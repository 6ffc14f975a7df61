"""HunyuanVideo DiT (HYVideo-T/2, -cfgdistill): a dual-stream then single-stream MMDiT with parameter
names, shapes and order exactly as the official checkpoints
(checkpoint_layouts/hunyuanvideo_dit.txt, hunyuanvideo_dit_noguidance.txt).

Tokens: image tokens (t, h, w order, from a [1,2,2] patch conv) followed by text tokens. Double
blocks keep separate weights per stream and attend jointly; single blocks run on the concatenation.
3D RoPE (interleaved real/imag pairs) rotates image queries/keys only, after the q/k RMSNorm.

Text masking. The official flash-attention call packs each sample as [image + valid text] and
[padded text]; here the joint attention takes a key mask [B, N_img + N_txt] instead. Image and valid
text queries see exactly the same keys as officially; only the outputs of padded text queries differ,
and those never reach an image or valid-text token (they are masked as keys everywhere), so the
model output is the same.
"""
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..layers.attention import AttentionCore, merge_heads
from ..layers.embeddings import PatchEmbed3D, TimestepEmbedder
from ..layers.init import declare_only, uniform_fan_in, zeros
from ..layers.linear import GELUTanh, Linear, Mlp, SiLU, torch_default_linear
from ..layers.modulation import split_rows, t2i_modulate
from ..layers.norms import LayerNorm, RMSNorm
from ..layers.seams import GatherSeam, SplitSeam

# official HUNYUAN_VIDEO_CONFIG (hyvideo/modules/models.py) + hyvideo/config.py defaults
# (in_channels 16 for the 884-16c VAE, text_states_dim 4096, text_states_dim_2 768, rope_theta 256)
_HYVIDEO_T2 = dict(in_channels=16, patch_size=(1, 2, 2), hidden_size=3072, num_heads=24, mlp_ratio=4.0,
                   depth_double=20, depth_single=40, rope_dims=(16, 56, 56), rope_theta=256.0,
                   text_dim=4096, clip_dim=768, refiner_depth=2)
PRESETS = {
    "HYVideo-T/2": dict(_HYVIDEO_T2, guidance_embed=False),
    "HYVideo-T/2-cfgdistill": dict(_HYVIDEO_T2, guidance_embed=True),
    # same code at a few hundred thousand params, for tests (text: 8 tokens x 32-d, CLIP 16-d)
    "tiny": dict(in_channels=16, patch_size=(1, 2, 2), hidden_size=64, num_heads=4, mlp_ratio=4.0,
                 depth_double=2, depth_single=2, rope_dims=(4, 6, 6), rope_theta=256.0,
                 text_dim=32, clip_dim=16, refiner_depth=2, guidance_embed=True),
}
GUIDANCE_SCALE_FACTOR = 1000.0  # the official pipeline feeds guidance_in with embedded_guidance_scale * 1000


# ---- small helpers --------------------------------------------------------------------------

def torch_default_init(linear: Linear) -> Linear:
    """Re-declare a Linear's init as PyTorch's nn.Linear default (layers the official code leaves alone)."""
    linear.weight.init_fn = uniform_fan_in(linear.in_features)
    if linear.bias is not None:
        linear.bias.init_fn = uniform_fan_in(linear.in_features)
    return linear


def torch_default_mlp(dim: int, hidden: int, act: nn.Cell) -> Mlp:
    mlp = Mlp(dim, hidden, act=act)
    torch_default_init(mlp.fc1)
    torch_default_init(mlp.fc2)
    return mlp


def zero_linear(in_features: int, out_features: int) -> Linear:
    """Linear zero-initialised (weight and bias), as the official modulation and output layers."""
    return Linear(in_features, out_features, init=zeros, bias_init=zeros)


def hunyuan_timestep_embedder(hidden_size: int) -> TimestepEmbedder:
    """Official TimestepEmbedder: weights N(0, 0.02), biases PyTorch default; cos-first 256-d sinusoid."""
    emb = TimestepEmbedder(hidden_size, 256, 10000.0, init_std=0.02)
    emb.mlp[0].bias.init_fn = uniform_fan_in(256)
    emb.mlp[2].bias.init_fn = uniform_fan_in(hidden_size)
    return emb


def split_qkv(qkv, heads: int):
    """[B, N, 3*H*D] laid out "(K H D)" -> q, k, v each [B, H, N, D]."""
    b, n, c = qkv.shape
    x = qkv.reshape(b, n, 3, heads, c // (3 * heads)).transpose(2, 0, 3, 1, 4)
    return x[0], x[1], x[2]


def chunks(mod, n: int):
    """[B, n*C] modulation vector -> n tensors [B, 1, C] (torch's .chunk(n, -1), broadcast over tokens)."""
    b, nc = mod.shape
    return split_rows(mod.reshape(b, n, nc // n), n)


# ---- rotary position embedding --------------------------------------------------------------

def rope_inv_freqs(dim: int, theta: float) -> np.ndarray:
    """1 / theta^(2i/dim), i < dim/2: the official get_1d_rotary_pos_embed frequencies."""
    return (1.0 / theta ** (np.arange(0, dim, 2)[: dim // 2].astype(np.float64) / dim)).astype(np.float32)


def axis_angles(n: int, freqs, dim: int):
    """[n, dim]: position x frequency for positions 0..n-1, each angle twice (repeat_interleave(2))."""
    angles = ops.arange(0, n, dtype=ms.float32)[:, None] * freqs[None, :]
    return ops.broadcast_to(angles[:, :, None], (n, dim // 2, 2)).reshape(n, dim)


class Rope3D(nn.Cell):
    """Tables (cos, sin) [T'*H'*W', head_dim] for the latent grid, axes (t, h, w) concatenated along
    the head dim ([16, 56, 56] officially), each angle repeated for its (real, imag) pair."""

    def __init__(self, dims, theta: float):
        super().__init__()
        self.dims = tuple(int(d) for d in dims)
        self.freqs_t = Tensor(rope_inv_freqs(self.dims[0], theta))
        self.freqs_h = Tensor(rope_inv_freqs(self.dims[1], theta))
        self.freqs_w = Tensor(rope_inv_freqs(self.dims[2], theta))

    def construct(self, gt: int, gh: int, gw: int):
        dt, dh, dw = self.dims
        a_t = ops.broadcast_to(axis_angles(gt, self.freqs_t, dt)[:, None, None], (gt, gh, gw, dt))
        a_h = ops.broadcast_to(axis_angles(gh, self.freqs_h, dh)[None, :, None], (gt, gh, gw, dh))
        a_w = ops.broadcast_to(axis_angles(gw, self.freqs_w, dw)[None, None, :], (gt, gh, gw, dw))
        angles = ops.cat((a_t, a_h, a_w), -1).reshape(gt * gh * gw, dt + dh + dw)
        return ops.cos(angles), ops.sin(angles)


def apply_rope(x, cos, sin):
    """x [B, H, N, D] with consecutive (real, imag) pairs rotated by the angles of cos/sin [N, D];
    computed in fp32 as the official apply_rotary_emb(use_real=True)."""
    dtype = x.dtype
    xf = x.astype(ms.float32)
    b, h, n, d = xf.shape
    pairs = xf.reshape(b, h, n, d // 2, 2)
    rotated = ops.cat((-pairs[..., 1:2], pairs[..., 0:1]), -1).reshape(b, h, n, d)  # (-imag, real)
    return (xf * cos + rotated * sin).astype(dtype)


def apply_rope_prefix(x, cos, sin, n_img: int):
    """RoPE on the first n_img tokens (image); the text tokens after them are left as they are."""
    return ops.cat((apply_rope(x[:, :, :n_img], cos, sin), x[:, :, n_img:]), 2)


# ---- conditioning embedders -----------------------------------------------------------------

class MLPEmbedder(nn.Cell):
    """in_layer -> SiLU -> out_layer (vector_in: CLIP pooled text -> hidden)."""

    def __init__(self, in_dim: int, hidden_size: int):
        super().__init__()
        self.in_layer = torch_default_linear(in_dim, hidden_size)
        self.out_layer = torch_default_linear(hidden_size, hidden_size)

    def construct(self, x):
        return self.out_layer(ops.silu(self.in_layer(x)))


class TextProjection(nn.Cell):
    """linear_1 -> SiLU -> linear_2 (the refiner's c_embedder on the mask-averaged text)."""

    def __init__(self, in_dim: int, hidden_size: int):
        super().__init__()
        self.linear_1 = torch_default_linear(in_dim, hidden_size)
        self.linear_2 = torch_default_linear(hidden_size, hidden_size)

    def construct(self, x):
        return self.linear_2(ops.silu(self.linear_1(x)))


class ModulateDiT(nn.Cell):
    """SiLU -> zero-initialised Linear(hidden -> factor*hidden)."""

    def __init__(self, hidden_size: int, factor: int):
        super().__init__()
        self.linear = zero_linear(hidden_size, factor * hidden_size)

    def construct(self, vec):
        return self.linear(ops.silu(vec))


# ---- text token refiner ---------------------------------------------------------------------

def refiner_attention(core: AttentionCore, q, k, v, mask):
    """Self-attention under the official pairwise mask M[i, j] = mask[i] & mask[j], column 0 forced
    True. A valid query row is a key mask (valid keys + key 0); a padded query row keeps key 0 only,
    so its output is exactly v[key 0]."""
    key_mask = ops.cat((ops.ones_like(mask[:, :1]), mask[:, 1:]), 1)
    out = core(q, k, v, key_mask)
    row_valid = ops.broadcast_to((mask > 0)[:, None, :, None], out.shape)
    return ops.where(row_valid, out, ops.broadcast_to(v[:, :, 0:1], out.shape))


class IndividualTokenRefinerBlock(nn.Cell):
    """Pre-norm (affine LayerNorm) self-attention + SiLU MLP, residuals gated by adaLN(c); no q/k norm."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = LayerNorm(hidden_size, 1e-6, affine=True)
        self.self_attn_qkv = torch_default_linear(hidden_size, 3 * hidden_size)
        self.self_attn_proj = torch_default_linear(hidden_size, hidden_size)
        self.norm2 = LayerNorm(hidden_size, 1e-6, affine=True)
        self.mlp = torch_default_mlp(hidden_size, int(hidden_size * mlp_ratio), SiLU())
        self.adaLN_modulation = nn.SequentialCell([SiLU(), zero_linear(hidden_size, 2 * hidden_size)])
        self.core = AttentionCore(hidden_size // num_heads)

    def construct(self, x, c, mask):
        gate_msa, gate_mlp = chunks(self.adaLN_modulation(c), 2)
        q, k, v = split_qkv(self.self_attn_qkv(self.norm1(x)), self.num_heads)
        attn = merge_heads(refiner_attention(self.core, q, k, v, mask))
        x = x + gate_msa * self.self_attn_proj(attn)
        return x + gate_mlp * self.mlp(self.norm2(x))


class IndividualTokenRefiner(nn.Cell):
    def __init__(self, hidden_size: int, num_heads: int, depth: int):
        super().__init__()
        self.blocks = nn.CellList([IndividualTokenRefinerBlock(hidden_size, num_heads) for _ in range(depth)])

    def construct(self, x, c, mask):
        for block in self.blocks:
            x = block(x, c, mask)
        return x


def masked_mean(x, mask):
    """Mean over valid tokens in fp32. The count is clamped at 1: an all-padded prompt gives 0 here
    where the official division gives NaN (the only case where the two differ)."""
    m = mask.astype(ms.float32)[:, :, None]
    total = (x.astype(ms.float32) * m).sum(1)
    return total / ops.maximum(m.sum(1), ops.ones_like(m.sum(1)))


class SingleTokenRefiner(nn.Cell):
    """txt_in: project the LLM states to hidden, then refine them conditioned on c =
    t_embedder(t) + c_embedder(mask-averaged raw text states)."""

    def __init__(self, text_dim: int, hidden_size: int, num_heads: int, depth: int = 2):
        super().__init__()
        self.input_embedder = torch_default_linear(text_dim, hidden_size)
        self.t_embedder = hunyuan_timestep_embedder(hidden_size)
        self.c_embedder = TextProjection(text_dim, hidden_size)
        self.individual_token_refiner = IndividualTokenRefiner(hidden_size, num_heads, depth)

    def construct(self, x, t, mask, dtype=ms.float32):
        c = self.t_embedder(t, dtype) + self.c_embedder(masked_mean(x, mask).astype(dtype))
        return self.individual_token_refiner(self.input_embedder(x), c, mask)


# ---- transformer blocks ---------------------------------------------------------------------

class MMDoubleStreamBlock(nn.Cell):
    """Image and text streams with their own modulation, qkv, q/k norm, proj and MLP; one joint
    attention over [image, text] tokens."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        head_dim = hidden_size // num_heads
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.num_heads = num_heads
        self.img_mod = ModulateDiT(hidden_size, 6)
        self.img_norm1 = LayerNorm(hidden_size, 1e-6, affine=False)
        self.img_attn_qkv = torch_default_linear(hidden_size, 3 * hidden_size, bias=qkv_bias)
        self.img_attn_q_norm = RMSNorm(head_dim, 1e-6)
        self.img_attn_k_norm = RMSNorm(head_dim, 1e-6)
        self.img_attn_proj = torch_default_linear(hidden_size, hidden_size, bias=qkv_bias)
        self.img_norm2 = LayerNorm(hidden_size, 1e-6, affine=False)
        self.img_mlp = torch_default_mlp(hidden_size, mlp_hidden, GELUTanh())
        self.txt_mod = ModulateDiT(hidden_size, 6)
        self.txt_norm1 = LayerNorm(hidden_size, 1e-6, affine=False)
        self.txt_attn_qkv = torch_default_linear(hidden_size, 3 * hidden_size, bias=qkv_bias)
        self.txt_attn_q_norm = RMSNorm(head_dim, 1e-6)
        self.txt_attn_k_norm = RMSNorm(head_dim, 1e-6)
        self.txt_attn_proj = torch_default_linear(hidden_size, hidden_size, bias=qkv_bias)
        self.txt_norm2 = LayerNorm(hidden_size, 1e-6, affine=False)
        self.txt_mlp = torch_default_mlp(hidden_size, mlp_hidden, GELUTanh())
        self.core = AttentionCore(head_dim)

    def construct(self, img, txt, vec, key_mask, cos, sin):
        img_shift1, img_scale1, img_gate1, img_shift2, img_scale2, img_gate2 = chunks(self.img_mod(vec), 6)
        txt_shift1, txt_scale1, txt_gate1, txt_shift2, txt_scale2, txt_gate2 = chunks(self.txt_mod(vec), 6)

        img_q, img_k, img_v = split_qkv(
            self.img_attn_qkv(t2i_modulate(self.img_norm1(img), img_shift1, img_scale1)), self.num_heads)
        img_q = apply_rope(self.img_attn_q_norm(img_q), cos, sin)  # RoPE after the q/k norm
        img_k = apply_rope(self.img_attn_k_norm(img_k), cos, sin)
        txt_q, txt_k, txt_v = split_qkv(
            self.txt_attn_qkv(t2i_modulate(self.txt_norm1(txt), txt_shift1, txt_scale1)), self.num_heads)
        txt_q, txt_k = self.txt_attn_q_norm(txt_q), self.txt_attn_k_norm(txt_k)

        attn = self.core(ops.cat((img_q, txt_q), 2), ops.cat((img_k, txt_k), 2), ops.cat((img_v, txt_v), 2),
                         key_mask)
        attn = merge_heads(attn)
        n_img = img.shape[1]
        img_attn, txt_attn = attn[:, :n_img], attn[:, n_img:]

        img = img + img_gate1 * self.img_attn_proj(img_attn)
        img = img + img_gate2 * self.img_mlp(t2i_modulate(self.img_norm2(img), img_shift2, img_scale2))
        txt = txt + txt_gate1 * self.txt_attn_proj(txt_attn)
        txt = txt + txt_gate2 * self.txt_mlp(t2i_modulate(self.txt_norm2(txt), txt_shift2, txt_scale2))
        return img, txt


class MMSingleStreamBlock(nn.Cell):
    """Parallel attention + MLP on [image, text]: linear1 -> [qkv | mlp in], linear2 on
    [attention out | GELU(mlp in)], one gated residual."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        head_dim = hidden_size // num_heads
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.linear1 = torch_default_linear(hidden_size, 3 * hidden_size + mlp_hidden)
        self.linear2 = torch_default_linear(hidden_size + mlp_hidden, hidden_size)
        self.q_norm = RMSNorm(head_dim, 1e-6)
        self.k_norm = RMSNorm(head_dim, 1e-6)
        self.pre_norm = LayerNorm(hidden_size, 1e-6, affine=False)
        self.mlp_act = GELUTanh()
        self.modulation = ModulateDiT(hidden_size, 3)
        self.core = AttentionCore(head_dim)

    def construct(self, x, vec, n_img: int, key_mask, cos, sin):
        shift, scale, gate = chunks(self.modulation(vec), 3)
        h = self.linear1(t2i_modulate(self.pre_norm(x), shift, scale))
        qkv, mlp_in = h[..., :3 * self.hidden_size], h[..., 3 * self.hidden_size:]
        q, k, v = split_qkv(qkv, self.num_heads)
        q = apply_rope_prefix(self.q_norm(q), cos, sin, n_img)
        k = apply_rope_prefix(self.k_norm(k), cos, sin, n_img)
        attn = merge_heads(self.core(q, k, v, key_mask))
        return x + gate * self.linear2(ops.cat((attn, self.mlp_act(mlp_in)), -1))


class FinalLayer(nn.Cell):
    """No-affine LayerNorm modulated by (shift, scale) = adaLN_modulation(vec), then a zero Linear."""

    def __init__(self, hidden_size: int, num_patch: int, out_channels: int):
        super().__init__()
        self.norm_final = LayerNorm(hidden_size, 1e-6, affine=False)
        self.linear = zero_linear(hidden_size, num_patch * out_channels)
        self.adaLN_modulation = nn.SequentialCell([SiLU(), zero_linear(hidden_size, 2 * hidden_size)])

    def construct(self, x, vec):
        shift, scale = chunks(self.adaLN_modulation(vec), 2)
        return self.linear(t2i_modulate(self.norm_final(x), shift, scale))


# ---- the model ------------------------------------------------------------------------------

class HunyuanDiT(nn.Cell):
    """Inputs: x [B, C, T, H, W] latents, t [B] in [0, 1000], text_states [B, L, text_dim] (LLM
    hidden states), text_mask [B, L] (1 = valid; valid tokens first, as the official packing assumes),
    text_states_2 [B, clip_dim] (CLIP pooled), guidance [B] the embedded guidance scale (e.g. 6.0;
    multiplied by 1000 here as the official pipeline does), required iff guidance_embed.
    Output [B, C, T, H, W] float32 (the flow velocity)."""

    def __init__(self, in_channels=16, out_channels=None, patch_size=(1, 2, 2), hidden_size=3072, num_heads=24,
                 mlp_ratio=4.0, depth_double=20, depth_single=40, rope_dims=(16, 56, 56), rope_theta=256.0,
                 qkv_bias=True, text_dim=4096, clip_dim=768, refiner_depth=2, guidance_embed=True):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
        if sum(rope_dims) != hidden_size // num_heads:
            raise ValueError(f"rope_dims {list(rope_dims)} must sum to the head dim {hidden_size // num_heads}")
        self.patch_size = tuple(patch_size)
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.hidden_size = hidden_size
        self.guidance_embed = guidance_embed

        self.img_in = PatchEmbed3D(self.patch_size, in_channels, hidden_size)
        self.txt_in = SingleTokenRefiner(text_dim, hidden_size, num_heads, refiner_depth)
        self.time_in = hunyuan_timestep_embedder(hidden_size)
        self.vector_in = MLPEmbedder(clip_dim, hidden_size)
        self.guidance_in = hunyuan_timestep_embedder(hidden_size) if guidance_embed else None
        self.double_blocks = nn.CellList([MMDoubleStreamBlock(hidden_size, num_heads, mlp_ratio, qkv_bias)
                                          for _ in range(depth_double)])
        self.single_blocks = nn.CellList([MMSingleStreamBlock(hidden_size, num_heads, mlp_ratio)
                                          for _ in range(depth_single)])
        self.final_layer = FinalLayer(hidden_size, int(np.prod(self.patch_size)), self.out_channels)
        self.rope = Rope3D(rope_dims, rope_theta)
        # where image tokens (with their RoPE rows) may be split across workers and gathered again;
        # text tokens stay whole on every rank
        self.split_tokens = SplitSeam(axis=1)
        self.split_rope = SplitSeam(axis=0)
        self.gather_tokens = GatherSeam(axis=1, ndim=3)

    def construct(self, x, t, text_states, text_mask, text_states_2, guidance=None):
        img, txt, vec, key_mask, cos, sin = self.embed(x, t, text_states, text_mask, text_states_2, guidance)
        return self.head(self.blocks_forward(img, txt, vec, key_mask, cos, sin), vec, x.shape)

    # the stages of construct, called one by one by a sampler that skips the blocks (TeaCache)
    def embed(self, x, t, text_states, text_mask, text_states_2, guidance=None):
        """-> this rank's image tokens, the text tokens, the modulation vector, the key mask over
        [image, text] and the image tokens' RoPE rows."""
        dtype = self.img_in.proj.weight.dtype
        b = x.shape[0]
        grid = self.grid(x.shape)
        vec = self.time_in(t, dtype) + self.vector_in(text_states_2.astype(dtype))
        if self.guidance_in is not None:
            if guidance is None:
                raise ValueError("this model embeds the guidance scale: pass guidance [B]")
            vec = vec + self.guidance_in(guidance.astype(ms.float32) * GUIDANCE_SCALE_FACTOR, dtype)

        text_mask = text_mask.astype(ms.float32)
        img = self.img_in(x.astype(dtype))  # [B, T'*H'*W', C]
        txt = self.txt_in(text_states.astype(dtype), t, text_mask, dtype)
        cos, sin = self.rope(grid[0], grid[1], grid[2])
        n_full = img.shape[1]
        # this rank's image tokens (all of them unless split; padded to a multiple of the split, masked)
        img, cos, sin = self.split_tokens(img), self.split_rope(cos), self.split_rope(sin)
        valid = self.split_tokens.valid(n_full, ms.float32)
        if valid is None:
            img_mask = ops.ones((b, n_full), ms.float32)
        else:
            img_mask = ops.broadcast_to(valid[None], (b, img.shape[1]))
        return img, txt, vec, ops.cat((img_mask, text_mask), 1), cos, sin

    def blocks_forward(self, img, txt, vec, key_mask, cos, sin):
        """The double- then single-stream blocks -> the image tokens."""
        n_img = img.shape[1]
        for block in self.double_blocks:
            img, txt = block(img, txt, vec, key_mask, cos, sin)
        h = ops.cat((img, txt), 1)
        for block in self.single_blocks:
            h = block(h, vec, n_img, key_mask, cos, sin)
        return h[:, :n_img]

    def head(self, img, vec, x_shape):
        """Image tokens -> the velocity [B, C, T, H, W], float32 (gathered from every rank under SP)."""
        grid = self.grid(x_shape)
        out = self.gather_tokens(self.final_layer(img, vec), grid[0] * grid[1] * grid[2])
        return self.unpatchify(out, grid).astype(ms.float32)

    def first_block_input(self, img, vec):
        """The first double block's modulated image input (TeaCache's signal of change)."""
        first = self.double_blocks[0]
        shift, scale = chunks(first.img_mod(vec), 6)[:2]
        return t2i_modulate(first.img_norm1(img), shift, scale)

    def grid(self, x_shape):
        return (x_shape[2] // self.patch_size[0], x_shape[3] // self.patch_size[1], x_shape[4] // self.patch_size[2])

    def unpatchify(self, x, grid):
        """[B, T'*H'*W', C*pt*ph*pw] -> [B, C, T, H, W]; official channel order (c, pt, ph, pw)."""
        b = x.shape[0]
        gt, gh, gw = grid
        pt, ph, pw = self.patch_size
        c = self.out_channels
        x = x.reshape(b, gt, gh, gw, c, pt, ph, pw).transpose(0, 4, 1, 5, 2, 6, 3, 7)
        return x.reshape(b, c, gt * pt, gh * ph, gw * pw)


def build_hunyuan_dit(preset: str = "HYVideo-T/2-cfgdistill", **overrides) -> HunyuanDiT:
    """A declared (not allocated) HunyuanDiT from a PRESETS entry plus overrides; `materialize` fills it."""
    if preset not in PRESETS:
        raise KeyError(f"unknown HunyuanDiT preset {preset!r}; known: {sorted(PRESETS)}")
    kwargs = {**PRESETS[preset], **overrides}
    with declare_only():
        return HunyuanDiT(**kwargs)
def preset_names():
    return sorted(PRESETS)
