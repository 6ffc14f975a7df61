"""Online encoding for runs that train straight from videos: the frozen VAE turns the step's
decoded clips into latents (mean + std * keyed noise, scaled as the family expects) and the frozen
text encoders turn captions into embeddings (and a pooled vector, for a family with a second,
pooled encoder), each as a compiled call before the train step. The text side is the TextEncoders
object vgen-cache text calls, so online and cached text are the same arrays."""
import mindspore as ms
import numpy as np
from mindspore import Tensor

from ..models.encoders import TextEncoders, build_vae


class OnlineEncoders:
    def __init__(self, model_cfg, latent_spec, *, vae: bool, text: bool, seed: int = 0, jit: bool = True):
        self.latent_spec = latent_spec
        wrap = ms.jit if jit else (lambda f: f)
        self.frames_per_call = model_cfg.vae.frames_per_call
        self.vae = build_vae(model_cfg.vae, seed) if vae else None
        self.text_encoders = TextEncoders.from_model_config(model_cfg, seed, jit=jit) if text else None
        self._encode_video = wrap(self._video)

    def _video(self, video):
        return self.vae.encode_video(video, self.frames_per_call)

    def __call__(self, batch: dict) -> dict:
        for suffix in ("", "_rejected"):  # a preference pair's rejected clip too
            if "video" + suffix in batch and "latent" + suffix not in batch:
                mean, std = self._encode_video(Tensor(batch["video" + suffix]))
                s = self.latent_spec
                batch["latent" + suffix] = ((mean.asnumpy() + std.asnumpy() * batch["vae_noise" + suffix])
                                            - s.shift) * s.scale
        for suffix in ("", "_uncond"):  # the unconditional (empty) captions of a distillation teacher too
            if "caption" + suffix in batch and "text_emb" + suffix not in batch:
                # dropped captions arrive as "" (the data set's empty_text): encoded like text/empty.npz
                out = self.text_encoders(list(batch["caption" + suffix]), batch.get("is_image" + suffix))
                out["text_mask"] = out["text_mask"].astype(np.int32)
                batch.update({k + suffix: v for k, v in out.items()})
        return batch
