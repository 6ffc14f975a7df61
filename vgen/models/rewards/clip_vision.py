"""OpenCLIP's VisionTransformer (open_clip transformer.py, as HPSv2's copy of open_clip has it), the
image tower of a CLIP reward model.

Facts from the official code:
- Parameters in state-dict order: the tower's own `class_embedding [width]`, `positional_embedding
  [grid^2 + 1, width]`, `proj [width, output_dim]`, then its children `conv1.weight [width, 3, p, p]`
  (no bias; patch_dropout and the Identity patchnorm hold nothing), `ln_pre`, `transformer.resblocks.{i}`
  (the text tower's ResidualAttentionBlock: ln_1, attn in_proj / out_proj, ln_2, mlp c_fc / c_proj),
  `ln_post`. ViT-H/14: width 1280, 32 layers, head_width 80 (16 heads), mlp_ratio 4, patch 14 at
  224 (a 16 x 16 grid), output_dim 1024; nn.GELU (erf), LayerNorm eps 1e-5.
- Forward: patches by conv1, the class token (class_embedding) first, + positional_embedding,
  ln_pre, the blocks without any mask, then ln_post on the class token and `@ proj`."""
import mindspore as ms
from mindspore import nn, ops

from ..layers.conv import Conv2d
from ..layers.init import new_param, normal
from ..layers.norms import LayerNorm
from ..text.open_clip import Transformer

VISION_CONFIGS = {
    # open_clip model_configs/ViT-H-14.json vision_cfg (HPSv2.1's tower); embed_dim 1024
    "vit-h-14": dict(image_size=224, patch_size=14, width=1280, layers=32, heads=16, output_dim=1024),
    "tiny": dict(image_size=28, patch_size=7, width=32, layers=2, heads=2, output_dim=32),
}


class VisionTransformer(nn.Cell):
    """pixels [N, 3, S, S] (normalised) -> image features [N, output_dim] (not yet unit length)."""

    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, heads: int, output_dim: int,
                 mlp_ratio: float = 4.0):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch_size}")
        self.image_size = image_size
        grid = image_size // patch_size
        scale = width ** -0.5
        # own parameters first (state-dict order), then the children
        self.class_embedding = new_param((width,), normal(scale))
        self.positional_embedding = new_param((grid * grid + 1, width), normal(scale))
        self.proj = new_param((width, output_dim), normal(scale))
        self.conv1 = Conv2d(3, width, patch_size, stride=patch_size, bias=False)
        self.ln_pre = LayerNorm(width, 1e-5)
        self.transformer = Transformer(width, layers, heads, mlp_ratio)
        self.ln_post = LayerNorm(width, 1e-5)
        self.layers = layers

    def construct(self, pixels):
        x = self.conv1(pixels)  # [N, width, grid, grid]
        n, width = x.shape[0], x.shape[1]
        x = x.reshape(n, width, -1).transpose(0, 2, 1)
        cls = ops.broadcast_to(self.class_embedding.astype(x.dtype).reshape(1, 1, width), (n, 1, width))
        x = ops.concat([cls, x], 1) + self.positional_embedding.astype(x.dtype)[None]
        x = self.transformer(self.ln_pre(x), ops.zeros((), ms.float32), self.layers)
        return ops.matmul(self.ln_post(x[:, 0]), self.proj.astype(x.dtype))


def build_vision(name: str, **overrides) -> VisionTransformer:
    if name not in VISION_CONFIGS:
        raise KeyError(f"unknown OpenCLIP vision config {name!r}; known: {sorted(VISION_CONFIGS)}")
    return VisionTransformer(**{**VISION_CONFIGS[name], **overrides})
