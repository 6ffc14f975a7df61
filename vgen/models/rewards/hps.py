"""HPSv2.1, T2V-Turbo's image-text reward: an OpenCLIP ViT-H/14 CLIP model (HPS_v2.1_compressed.pt is
its state dict) scoring decoded frames against their caption.

Facts from the official code (T2V-Turbo reward_fn.get_hpsv2_fn; HPSv2's open_clip copy):
- The model is open_clip's `CLIP`: state-dict order `positional_embedding`, `text_projection`,
  `logit_scale`, `visual.*` (clip_vision.py), `transformer.*`, `token_embedding.weight`, `ln_final.*`
  (the text tower of vgen/models/text/open_clip.py with every block run). 986,109,441 parameters.
- Score: the frames (decoded, (x / 2 + 0.5).clamp(0, 1)) go through preprocess_val.transforms[2:]:
  ResizeMaxSize(224) (bicubic, the longer side to 224, the shorter zero-padded, centred) and
  Normalize(OpenAI CLIP mean / std); then encode_image(normalize=True) . encode_text(normalize=True),
  with no logit scale. The text side runs under no_grad; the reward's gradient reaches the frames.
- T2V-Turbo maximises it on 5 random frames of 1 random sample of the batch, weight 1.0."""
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..text.open_clip import OpenCLIPTextEncoder, open_clip_text_config, unit
from .clip_vision import VISION_CONFIGS, VisionTransformer
from .resample import padded_resample, resize_max_size

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip OPENAI_DATASET_MEAN / STD
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

HPS_CONFIGS = {
    "hpsv2.1": dict(text="open-clip-vit-h-14", vision="vit-h-14", embed_dim=1024),
    "hpsv2.1-tiny": dict(text="tiny", vision="tiny", embed_dim=32),  # tests and CPU runs: the same code
}


def build_hps(name: str) -> OpenCLIPTextEncoder:
    """The CLIP model of a named size, official names (declared when called under declare_only())."""
    if name not in HPS_CONFIGS:
        raise KeyError(f"unknown HPS config {name!r}; known: {sorted(HPS_CONFIGS)}")
    c = HPS_CONFIGS[name]
    visual = VisionTransformer(**VISION_CONFIGS[c["vision"]])
    return OpenCLIPTextEncoder(**{**open_clip_text_config(c["text"]), "layer": "last"}, visual=visual,
                               embed_dim=c["embed_dim"])


def max_size_matrices(height: int, width: int, size: int):
    """(rows [size, H], cols [W, size]): ResizeMaxSize(size) of an H x W image as rows @ x @ cols."""
    h, w, (top, bottom, left, right) = resize_max_size(height, width, size)
    return padded_resample(height, h, (top, bottom)), padded_resample(width, w, (left, right)).T.copy()


class ImageTextScore(nn.Cell):
    """HPS score [N] of frames [N, 3, H, W] in [-1, 1] against unit text features [N, D], given the
    preprocessing's resize matrices (max_size_matrices, host-side per frame size)."""

    def __init__(self, clip: OpenCLIPTextEncoder):
        super().__init__()
        self.clip = clip
        self.mean = Tensor(np.array(CLIP_MEAN, np.float32).reshape(1, 3, 1, 1))
        self.std = Tensor(np.array(CLIP_STD, np.float32).reshape(1, 3, 1, 1))

    def construct(self, frames, text_features, rows, cols):
        x = ops.clamp(frames.astype(ms.float32) / 2 + 0.5, 0.0, 1.0)
        x = ops.matmul(ops.matmul(rows, x), cols)  # resize, zero padding
        x = (x - self.mean) / self.std
        dtype = self.clip.visual.proj.dtype
        image = unit(self.clip.visual(x.astype(dtype)).astype(ms.float32))
        return (image * text_features).sum(-1)


def config_names():
    return sorted(HPS_CONFIGS)
