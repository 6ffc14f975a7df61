"""Online encoding for runs that train straight from videos: the frozen VAE turns the step's
decoded clips into latents (mean + std * keyed noise, scaled as the family expects) and the frozen
text encoder turns captions into embeddings, each as a compiled call before the train step."""
import mindspore as ms
import numpy as np
from mindspore import Tensor

from ..models.encoders import build_text_encoder, build_vae


class OnlineEncoders:
    def __init__(self, model_cfg, latent_spec, *, vae: bool, text: bool, seed: int = 0, jit: bool = True):
        self.latent_spec = latent_spec
        wrap = ms.jit if jit else (lambda f: f)
        self.frames_per_call = model_cfg.vae.frames_per_call
        self.vae = build_vae(model_cfg.vae, seed) if vae else None
        self.text_encoder, self.tokenizer = build_text_encoder(model_cfg.text_encoder, seed) if text else (None, None)
        self._encode_video = wrap(self._video)
        self._encode_text = wrap(self._text)

    def _video(self, video):
        return self.vae.encode_video(video, self.frames_per_call)

    def _text(self, ids, mask):
        return self.text_encoder(ids, mask)

    def __call__(self, batch: dict) -> dict:
        if "video" in batch and "latent" not in batch:
            mean, std = self._encode_video(Tensor(batch["video"]))
            s = self.latent_spec
            batch["latent"] = ((mean.asnumpy() + std.asnumpy() * batch["vae_noise"]) - s.shift) * s.scale
        if "caption" in batch and "text_emb" not in batch:
            tokens = self.tokenizer(list(batch["caption"]))
            ids, mask = tokens["input_ids"], tokens["attention_mask"]
            batch["text_emb"] = self._encode_text(Tensor(ids), Tensor(mask)).asnumpy()
            batch["text_mask"] = mask.astype(np.int32)
        return batch
