"""Prompts -> the denoiser's named inputs (the family's `fields`), as training feeds them: the
encoded text, the family's prepared fields (masks in its dtype, size / fps conditioning, embedded
guidance) and, for the unconditional branch of classifier-free guidance, what the family trained
its dropped captions as: the caption-dropout flags (drop_to "model": a learned null caption inside
the net) or the empty prompt's embedding (drop_to "empty"; sample.negative_prompt in its place
when set)."""
import gc
import logging
from typing import Dict, List, Sequence

import numpy as np

log = logging.getLogger("vgen")


def encode_prompts(encoders, prompts: Sequence[str], image: bool) -> Dict[str, np.ndarray]:
    """The text encoders' outputs of `prompts`; a prompt that fills every token position is
    reported (it may have been cut at the encoder's max length)."""
    out = encoders(list(prompts), np.full(len(prompts), image))
    mask = np.asarray(out["text_mask"])
    for i, n in enumerate(mask.sum(-1)):
        if n >= mask.shape[-1] and prompts[i]:
            log.warning("prompt %d fills all %d text tokens and may have been cut: %.60s...", i, mask.shape[-1],
                        prompts[i])
    return out


def model_inputs(family, text: Dict[str, np.ndarray], geometry, fps: float, guidance=None,
                 dropped: bool = False) -> Dict[str, np.ndarray]:
    """{field: array [B, ...]} for B encoded prompts, every frame generated (frame_mask all True)."""
    b = len(text["text_emb"])
    batch = {k: np.asarray(v) for k, v in text.items()}
    batch["text_drop"] = np.full(b, dropped)
    batch["latent"] = np.zeros((b, *geometry.latent), np.float32)  # prepare hooks read its shape
    batch.update(height=np.full(b, geometry.height, np.float32), width=np.full(b, geometry.width, np.float32),
                 fps=np.full(b, fps, np.float32), num_frames=np.full(b, geometry.frames, np.float32))
    batch["frame_mask"] = np.ones((b, geometry.latent[1]), bool)
    if family.prepare is not None:
        batch.update(family.prepare(batch))
    if guidance is not None and "guidance" in batch:
        batch["guidance"] = np.full(b, guidance, np.float32)
    return {k: batch[k] for k in family.fields}


def conditioning(family, encoders, prompts: Sequence[str], geometry, sample_cfg, guidance=None):
    """(conditional, unconditional) inputs of `prompts`."""
    image = geometry.frames == 1
    text = encode_prompts(encoders, prompts, image)
    cond = model_inputs(family, text, geometry, sample_cfg.fps, guidance)
    if family.text.drop_to == "model":
        uncond = model_inputs(family, text, geometry, sample_cfg.fps, guidance, dropped=True)
    else:
        empty = encoders([sample_cfg.negative_prompt] * len(prompts), np.full(len(prompts), image))
        uncond = model_inputs(family, empty, geometry, sample_cfg.fps, guidance)
    return cond, uncond


def encoded_batches(family, model_cfg, seed: int, prompts: Sequence[str], index: List[int], geometry,
                    sample_cfg, jit: bool) -> list:
    """[(indices, conditional, unconditional)] per sample.batch_size prompts of `index` (an index -1
    pads with the last prompt: drawn, not written). The text encoders are built for it and freed
    after, so their memory is back before the denoiser's weights are loaded."""
    from ..models.encoders import TextEncoders

    encoders = TextEncoders.from_model_config(model_cfg, seed, jit=jit)
    size = sample_cfg.batch_size
    batches = []
    for start in range(0, len(index), size):
        part = index[start:start + size]
        batches.append((part, *conditioning(family, encoders, [prompts[i] for i in part], geometry, sample_cfg,
                                            sample_cfg.guidance)))
    del encoders
    gc.collect()
    return batches
