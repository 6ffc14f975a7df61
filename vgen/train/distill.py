"""The teacher and the target of a consistency distillation stage (distill.enabled;
objectives/consistency.py): per micro-batch, before the student's step, two forward-only compiled
calls add the student's loss inputs to the batch:

  x_prev  the teacher's CFG DDIM step from the noised latent: the training net itself with every
          LoRA adapter skipped and no guidance embedding (the base the student started from, at
          no memory cost), or without LoRA a frozen copy of model.pretrained (reference.py);
  target  f(x_prev, t_end) of the target weights: the student's own under no gradient (online),
          or their EMA (schedule.ema_decay), written into the net for the call and the masters
          written back after.

Both run on the parallelized net, so ZeRO-3 gathers and SP seams apply to them as to the student."""
import logging
from contextlib import nullcontext

import mindspore as ms

from ..models.lora import adapters_disabled
from ..objectives.consistency import ConsistencyDistillation
from .flat_params import weights_held
from .reference import frozen_copy

log = logging.getLogger("vgen")
TEXT_FIELDS = ("text_emb", "text_mask", "text_pooled")


def on_rank(ranks, rank: int) -> bool:
    return not ranks or rank in ranks


def reward_model(build, r, key: str):
    """A reward's frozen model with its weights (distill.<key>.path; tiny models start from their seed)."""
    from ..config.models import seeded
    from ..models.encoders import build_frozen

    if not r.path and not seeded(r.model):
        raise ValueError(f"distill.{key}.path: {r.model} needs its weights, the official file converted with "
                         f"tools/convert_weights.py")
    return build_frozen(build, r.model, r.path, 0, "reward model")


class RewardText:
    """Captions -> the reward model's unit text features [B, D] (numpy), one compiled call."""

    def __init__(self, model, tokenizer, jit: bool):
        self.tokenizer = tokenizer

        def features(ids, mask):
            return model.text_features(ids, mask)

        self.run = ms.jit(features) if jit else features

    def __call__(self, captions):
        tokens = self.tokenizer(captions)
        return self.run(ms.Tensor(tokens["input_ids"]), ms.Tensor(tokens["attention_mask"])).asnumpy()


def image_reward(cfg, family):
    """distill.image_reward as a FrameReward (HPSv2.1), its model frozen with its weights."""
    from ..models.rewards.hps import ImageTextScore, build_hps, max_size_matrices
    from ..models.text.open_clip import OpenCLIPTokenizer
    from ..objectives.rewards import IMAGE, FrameReward

    r = cfg.distill.image_reward
    clip = reward_model(lambda: build_hps(r.model), r, "image_reward")
    tokenizer_path = r.tokenizer or cfg.model.text_encoder.get("tokenizer")
    if not tokenizer_path:
        raise ValueError("distill.image_reward.tokenizer: set it to the OpenCLIP tokenizer.json (or its directory)")
    # open_clip.tokenize: the tower's whole context (77 tokens at full size)
    text = RewardText(clip, OpenCLIPTokenizer(tokenizer_path, clip.context_length), cfg.jit)
    size = clip.visual.image_size
    return FrameReward(IMAGE, ImageTextScore(clip), text, lambda h, w, rng: max_size_matrices(h, w, size),
                       family.latent, r.scale, r.frames, r.samples)


def video_reward(cfg, family):
    """distill.video_reward as a FrameReward (InternVideo2-S2 on `frames` frames), frozen with its weights."""
    from ..models.rewards.internvideo2 import (InternVideo2Tokenizer, VideoTextScore, build_internvideo2,
                                               min_size_crop_matrices)
    from ..objectives.rewards import VIDEO, FrameReward

    r = cfg.distill.video_reward
    if not r.tokenizer:
        raise ValueError("distill.video_reward.tokenizer: set it to bert-large-uncased's vocab.txt (or its directory)")
    model = reward_model(lambda: build_internvideo2(r.model, r.frames), r, "video_reward")
    text = RewardText(model, InternVideo2Tokenizer(r.tokenizer, model.max_length), cfg.jit)
    size = model.vision_encoder.image_size
    return FrameReward(VIDEO, VideoTextScore(model), text, lambda h, w, rng: min_size_crop_matrices(h, w, size, rng),
                       family.latent, r.scale, r.frames)


def distillation_objective(family, cfg, rank: int = 0) -> ConsistencyDistillation:
    """The family's diffusion schedule distilled as cfg.distill says, CFG over its text fields, with
    the reward terms this rank computes (their decoder the family's VAE)."""
    d, base = cfg.distill, family.objective
    if family.unguided_denoise is None:
        raise ValueError(f"distill.enabled: model {cfg.model.name} embeds no guidance scale (model.time_cond_proj_dim)")
    rewards = [build(cfg, family) for r, build in ((d.image_reward, image_reward), (d.video_reward, video_reward))
               if r.model and on_rank(r.ranks, rank)]
    decoder = None
    if rewards:
        from ..models.encoders import build_vae
        from ..objectives.rewards import Decoder

        decoder = Decoder(build_vae(cfg.model.vae, 0), cfg.model.vae.frames_per_call)
    return ConsistencyDistillation(base.tables.alphas_cumprod, d.solver_steps, d.skip, d.w_min, d.w_max, d.huber_c,
                                   d.timestep_scaling, [f for f in TEXT_FIELDS if f in family.fields], base,
                                   rewards, decoder, 1.0 if on_rank(d.ranks, rank) else 0.0)


class Distillation:
    def __init__(self, cfg, family, mesh, buckets, sync, cast):
        obj, wrap = family.objective, (ms.jit if cfg.jit else (lambda f: f))
        self.lora = cfg.model.lora.rank > 0
        teacher_net = family.net if self.lora else frozen_copy(cfg, mesh, cast).net
        self.teacher_cell = obj.teacher_step(teacher_net, family.unguided_denoise,
                                             [f for f in family.fields if f != "guidance"])
        self.target_cell = obj.target_cell(family.net, family.denoise)
        self.net, self.buckets, self.sync = family.net, buckets, sync
        self.ema_target = cfg.distill.target == "ema"
        # a rank that only scores rewards needs neither call, unless they communicate (ZeRO-3 gathers, SP
        # seams, the EMA's gather under ZeRO-1/2): then every rank runs both so that the collectives match
        communicates = sync.zero_stage == 3 or mesh.sp > 1 or (self.ema_target and sync.shards > 1)
        self.skip = obj.distill_weight == 0 and not communicates
        self._teacher, self._target = wrap(self._teacher_step), wrap(self._target_prediction)
        if mesh.is_main:
            log.info("consistency distillation: %d solver steps (skip %d), w ~ U[%g, %g], teacher %s, target %s; "
                     "rank 0: consistency x%g, rewards %s", len(obj.solver.timesteps), obj.skip, obj.w_min, obj.w_max,
                     "the base (adapters off)" if self.lora else "a frozen copy of model.pretrained",
                     f"EMA {cfg.schedule.ema_decay:g}" if self.ema_target else "the online student",
                     obj.distill_weight, [f"{r.kind} x{r.scale:g} on {r.frames} frames" for r in obj.rewards] or "none")

    def _teacher_step(self, batch):
        return self.teacher_cell(batch)

    def _target_prediction(self, batch):
        return self.target_cell(batch)

    def __call__(self, inputs: dict) -> dict:
        if self.skip:  # the consistency term is weighted 0 here: any values do
            zeros = ms.ops.zeros_like(inputs["latent"])
            return {**inputs, "x_prev": zeros, "target": zeros}
        # each graph is only ever compiled and run in its own setting of the adapters
        with adapters_disabled(self.net) if self.lora else nullcontext():
            x_prev = self._teacher(ms.mutable(inputs))
        inputs = {**inputs, "x_prev": x_prev}
        with weights_held(self.buckets, "ema", self.sync.gather) if self.ema_target else nullcontext():
            target = self._target(ms.mutable(inputs))
        return {**inputs, "target": target}
