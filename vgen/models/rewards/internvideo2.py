"""InternVideo2-Stage2 1B, T2V-Turbo's video-text reward ("vi_clip2"): the parts its score runs.

Facts from the official code (t2v-turbo intern_vid2/: demo_utils.InternVideo2_Stage2 as
setup_internvideo2 loads InternVideo2-stage2_1b-224p-f4.pt; backbones/internvideo2/internvideo2.py;
backbones/bert/xbert.py; reward_fn.get_intern_vid2_score_fn):
- Video tower `vision_encoder` (PretrainInternVideo2, 1B): own parameters `cls_token [1, 1, 1408]`,
  `pos_embed [1, T*256 + 1, 1408]` (learned; the f4 file's 4-frame table is interpolated linearly along
  time when loaded for T = 8), then `patch_embed.proj` (Conv3d 3 -> 1408, kernel = stride = (1, 14, 14),
  with bias), 40 `blocks` (pre-norm, RMSNorm eps 1e-6 without bias; `attn.qkv` without bias, rows q,
  k, v; `attn.q_norm` / `k_norm` RMSNorm over all 1408 channels of q and k; `attn.proj`; LayerScale
  `ls1.gamma`, `ls2.gamma` applied in fp32; `mlp.fc1` 1408 -> 6144, tanh GELU (flash-attn FusedMLP),
  `mlp.fc2`), no final norm, then `clip_projector`: attention pooling whose single query is
  LayerNorm(mean of all 2049 tokens, the class token included), keys and values their own LayerNorms
  (eps 1e-5), standalone `q_bias`, `k_bias`, `v_bias` (registered before the bias-free q, k, v
  Linears), 16 heads, `proj` 1408 -> 768. Tokens are t-major (frame, row, column), the class token first.
- `vision_proj` 768 -> 512, then unit length (no eps).
- Text: xbert BertModel (bert-large-uncased, 1024 wide, 16 heads, 4096 inner, 512 positions, eps 1e-12,
  exact GELU) in mode "text": only layers 0..18 run (fusion_layer 19; layers 19..23 carry the unused
  cross-attention and are not declared here), the [CLS] state (no pooler), `text_proj` 1024 -> 512,
  unit length. The checkpoint names it `text_encoder.bert.*`; the tokenizer writes [CLS] and the text,
  no [SEP], right-padded with [PAD] = 0 to 40 tokens.
- Score: cosine of the two features, no temperature. Frames: (x / 2 + 0.5).clamp(0, 1), ResizeCropMinSize
  (224): bicubic, the shorter side to 224, one random 224 crop for the whole call, then ImageNet
  mean / std. T2V-Turbo scores 8 frames at stride t // 8 from a random start, weight 2.0.
- Unused by the score and not declared (the converter drops them): img_pos_embed, clip_pos_embed,
  clip_img_pos_embed, clip_decoder.*, final_clip_decoder.*, BERT layers 19..23, text_encoder.cls.*,
  temp, itm_head. Declared: 1,292,738,304 parameters at 8 frames (1,291,296,512 at 4)."""
import re

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..layers.attention import AttentionCore, merge_heads, split_heads
from ..layers.conv import Conv3d
from ..layers.init import new_param, normal, zeros
from ..layers.linear import Linear, torch_default_linear
from ..layers.norms import LayerNorm, RMSNorm
from ..text.bert import BertEncoder, BertTokenizer
from ..text.open_clip import unit
from .resample import resample_matrix, resize_min_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IV2_CONFIGS = {
    "internvideo2-s2": dict(vision=dict(image_size=224, patch_size=14, width=1408, depth=40, heads=16, mlp_hidden=6144,
                                        pool_dim=768),
                            text=dict(vocab_size=30522, hidden_size=1024, num_layers=19, num_heads=16,
                                      intermediate_size=4096, max_positions=512, type_vocab_size=2, eps=1e-12),
                            embed_dim=512, max_length=40),
    "internvideo2-s2-tiny": dict(vision=dict(image_size=28, patch_size=7, width=32, depth=2, heads=2, mlp_hidden=64,
                                             pool_dim=24),
                                 text=dict(vocab_size=64, hidden_size=16, num_layers=2, num_heads=2,
                                           intermediate_size=32, max_positions=48, type_vocab_size=2, eps=1e-12),
                                 embed_dim=16, max_length=40),
}


class LayerScale(nn.Cell):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = new_param((dim,), lambda shape, rng: np.full(shape, 1e-5, np.float32))

    def construct(self, x):
        return (x.astype(ms.float32) * self.gamma.astype(ms.float32)).astype(x.dtype)


class Attention(nn.Cell):
    """qkv without bias, RMSNorm over the whole q and k, full attention, proj."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = Linear(dim, 3 * dim, bias=False)
        self.proj = Linear(dim, dim)
        self.q_norm, self.k_norm = RMSNorm(dim, 1e-6), RMSNorm(dim, 1e-6)
        self.core = AttentionCore(dim // heads)

    def construct(self, x):
        qkv = self.qkv(x)
        d = qkv.shape[-1] // 3
        q, k, v = self.q_norm(qkv[..., :d]), self.k_norm(qkv[..., d:2 * d]), qkv[..., 2 * d:]
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))
        return self.proj(merge_heads(self.core(q, k, v)))


class MLP(nn.Cell):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = Linear(dim, hidden), Linear(hidden, dim)

    def construct(self, x):
        return self.fc2(ops.gelu(self.fc1(x), approximate="tanh"))  # FusedMLP's gelu_approx


class Block(nn.Cell):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        # registration order = state-dict order
        self.norm1 = RMSNorm(dim, 1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = RMSNorm(dim, 1e-6)
        self.mlp = MLP(dim, hidden)
        self.ls2 = LayerScale(dim)

    def construct(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class CrossAttention(nn.Cell):
    """One query over the tokens: bias-free q, k, v Linears with standalone biases, then proj."""

    def __init__(self, dim: int, heads: int, out_dim: int):
        super().__init__()
        self.heads = heads
        self.q_bias, self.k_bias, self.v_bias = (new_param((dim,), zeros) for _ in range(3))
        self.q, self.k, self.v = (Linear(dim, dim, bias=False) for _ in range(3))
        self.proj = torch_default_linear(dim, out_dim)
        self.core = AttentionCore(dim // heads)

    def construct(self, x_q, x_k, x_v):
        q = split_heads(self.q(x_q) + self.q_bias.astype(x_q.dtype), self.heads)
        k = split_heads(self.k(x_k) + self.k_bias.astype(x_k.dtype), self.heads)
        v = split_heads(self.v(x_v) + self.v_bias.astype(x_v.dtype), self.heads)
        return self.proj(merge_heads(self.core(q, k, v)))


class AttentionPooling(nn.Cell):
    def __init__(self, dim: int, heads: int, out_dim: int):
        super().__init__()
        self.norm1_q, self.norm1_k, self.norm1_v = (LayerNorm(dim, 1e-5) for _ in range(3))
        self.cross_attn = CrossAttention(dim, heads, out_dim)

    def construct(self, x):
        query = self.norm1_q(x.mean(1, keep_dims=True))
        return self.cross_attn(query, self.norm1_k(x), self.norm1_v(x))[:, 0]


class VideoEncoder(nn.Cell):
    """clips [B, 3, T, S, S] (normalised) -> pooled features [B, pool_dim]."""

    def __init__(self, image_size: int, patch_size: int, width: int, depth: int, heads: int, mlp_hidden: int,
                 pool_dim: int, frames: int):
        super().__init__()
        grid = image_size // patch_size
        self.image_size, self.frames = image_size, frames
        self.cls_token = new_param((1, 1, width), zeros)
        self.pos_embed = new_param((1, frames * grid * grid + 1, width), normal(0.02))
        self.patch_embed = PatchEmbed(width, patch_size)
        self.blocks = nn.CellList([Block(width, heads, mlp_hidden) for _ in range(depth)])
        self.clip_projector = AttentionPooling(width, heads, pool_dim)

    def construct(self, clips):
        x = self.patch_embed(clips)  # [B, T * grid^2, width], t-major
        b, _, width = x.shape
        cls = ops.broadcast_to(self.cls_token.astype(x.dtype), (b, 1, width))
        x = ops.concat([cls, x], 1) + self.pos_embed.astype(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.clip_projector(x)


class PatchEmbed(nn.Cell):
    def __init__(self, width: int, patch_size: int):
        super().__init__()
        self.proj = Conv3d(3, width, (1, patch_size, patch_size), stride=(1, patch_size, patch_size))

    def construct(self, x):
        x = self.proj(x)  # [B, width, T, g, g]
        b, c = x.shape[0], x.shape[1]
        return x.reshape(b, c, -1).transpose(0, 2, 1)


class InternVideo2(nn.Cell):
    """The reward's parts of InternVideo2_Stage2, official names."""

    def __init__(self, vision: dict, text: dict, embed_dim: int, max_length: int, frames: int = 8):
        super().__init__()
        self.max_length = max_length
        self.vision_encoder = VideoEncoder(**vision, frames=frames)
        self.text_encoder = BertEncoder(**text)
        self.vision_proj = torch_default_linear(vision["pool_dim"], embed_dim)
        self.text_proj = torch_default_linear(text["hidden_size"], embed_dim)

    def video_features(self, clips):
        """[B, 3, T, S, S] -> unit features [B, embed_dim] (get_vid_feat_with_grad)."""
        f = self.vision_proj(self.vision_encoder(clips)).astype(ms.float32)
        return f / ops.sqrt((f * f).sum(-1, keepdims=True))

    def text_features(self, input_ids, attention_mask):
        """Tokens [B, L] -> unit features [B, embed_dim]: the [CLS] state through text_proj."""
        states = self.text_encoder(input_ids, attention_mask)
        return unit(self.text_proj(states[:, 0]).astype(ms.float32))


def build_internvideo2(name: str, frames: int = 8) -> InternVideo2:
    if name not in IV2_CONFIGS:
        raise KeyError(f"unknown InternVideo2 config {name!r}; known: {sorted(IV2_CONFIGS)}")
    return InternVideo2(**IV2_CONFIGS[name], frames=frames)


def config_names():
    return sorted(IV2_CONFIGS)


class VideoTextScore(nn.Cell):
    """Cosine score [S] of clips [S, F, 3, H, W] in [-1, 1] against unit text features [S, D], given
    ResizeCropMinSize's matrices (min_size_crop_matrices)."""

    def __init__(self, model: InternVideo2):
        super().__init__()
        self.model = model
        self.mean = Tensor(np.array(IMAGENET_MEAN, np.float32).reshape(1, 1, 3, 1, 1))
        self.std = Tensor(np.array(IMAGENET_STD, np.float32).reshape(1, 1, 3, 1, 1))

    def construct(self, clips, text_features, rows, cols):
        x = ops.clamp(clips.astype(ms.float32) / 2 + 0.5, 0.0, 1.0)
        x = ops.matmul(ops.matmul(rows, x), cols)  # resize and crop
        x = ((x - self.mean) / self.std).transpose(0, 2, 1, 3, 4)  # [S, 3, F, 224, 224]
        dtype = self.model.vision_proj.weight.dtype
        return (self.model.video_features(x.astype(dtype)) * text_features).sum(-1)


def min_size_crop_matrices(height: int, width: int, size: int, rng):
    """(rows [size, H], cols [W, size]) of ResizeCropMinSize(size): the shorter side resized to
    `size` (antialiased bicubic), then a crop at an offset drawn as RandomCrop draws it."""
    h, w = resize_min_size(height, width, size)
    rows = resample_matrix(height, h) if h != height else np.eye(height, dtype=np.float32)
    cols = resample_matrix(width, w) if w != width else np.eye(width, dtype=np.float32)
    if (h, w) != (height, width):  # no resize, no crop (the official `scale != 1` test)
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        rows, cols = rows[top:top + size], cols[left:left + size]
    return rows, cols.T.copy()


def interpolate_frames(pos_embed: np.ndarray, source_frames: int, frames: int) -> np.ndarray:
    """pos_embed [1, 1 + source_frames * n, C] -> [1, 1 + frames * n, C]: linear along time
    (F.interpolate mode="linear", align_corners=False), the class row kept, as the official load does
    (interpolate_pos_embed_internvideo2 with orig_t_size=4)."""
    _, length, c = pos_embed.shape
    if (length - 1) % source_frames:
        raise ValueError(f"pos_embed of {length} rows is not 1 + {source_frames} frames of tokens")
    grid = pos_embed[0, 1:].astype(np.float64).reshape(source_frames, -1, c)
    src = np.clip((np.arange(frames) + 0.5) * source_frames / frames - 0.5, 0, source_frames - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, source_frames - 1)
    frac = (src - lo)[:, None, None]
    out = (grid[lo] * (1 - frac) + grid[hi] * frac).reshape(1, -1, c)
    return np.concatenate([pos_embed[:, :1].astype(np.float64), out], 1).astype(pos_embed.dtype)


CHECKPOINT_FRAMES = 4  # InternVideo2-stage2_1b-224p-f4.pt; the official loader assumes it (orig_t_size=4)


def checkpoint_reshape(name: str, array: np.ndarray, shape) -> np.ndarray:
    """The converter's hook: the f4 checkpoint's pos_embed interpolated to the frames of `shape`."""
    if name != "vision_encoder.pos_embed" or tuple(array.shape) == tuple(shape):
        return array
    tokens = (array.shape[1] - 1) // CHECKPOINT_FRAMES
    return interpolate_frames(array, CHECKPOINT_FRAMES, (shape[1] - 1) // tokens)


class InternVideo2Tokenizer(BertTokenizer):
    """The official BertTokenizer (bert-large-uncased vocab.txt): [CLS] and the text, no [SEP]
    (as ALBEF / BLIP build it), right-padded with [PAD] = 0 to max_length."""

    def __init__(self, path: str, max_length: int = 40):
        from tokenizers import processors

        super().__init__(path, max_length)
        cls = self.tokenizer.token_to_id("[CLS]")
        self.tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A", special_tokens=[("[CLS]", cls)])


FUSION_LAYER = 19  # text layers from here on hold the cross-attention of the multimodal encoder: never run
UNUSED = re.compile(r"^(temp|itm_head\..*|text_encoder\.cls\..*|text_encoder\.bert\.embeddings\.position_ids|"
                    r"vision_encoder\.(img_pos_embed|clip_pos_embed|clip_img_pos_embed|clip_decoder\..*|"
                    r"final_clip_decoder\..*))$")
TEXT_LAYER = re.compile(r"^text_encoder\.bert\.encoder\.layer\.(\d+)\.")


def checkpoint_names(keys, load_key: str = "module"):
    """The converter's unwrap: the file's `module` dict (torch.load(path)["module"]), without what the
    score never runs."""
    prefix = load_key + "."
    names = {(k[len(prefix):] if k.startswith(prefix) else k): k for k in keys}
    out = {}
    for name, raw in names.items():
        layer = TEXT_LAYER.match(name)
        if UNUSED.match(name) or (layer and int(layer.group(1)) >= FUSION_LAYER):
            continue
        out[name] = raw
    return out


def checkpoint_rename(name: str) -> str:
    """The checkpoint's `text_encoder.bert.*` is the model's `text_encoder.*` (setup_internvideo2)."""
    return "text_encoder." + name[len("text_encoder.bert."):] if name.startswith("text_encoder.bert.") else name
