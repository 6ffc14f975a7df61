"""The one training loop, for every family.

Order of setup: device -> world (dp x sp) -> family -> weights (checkpoint, pretrained or fresh
init, in fp32) -> optimizer and EMA (fp32 copies) -> cast to the compute dtype -> data -> loop.
"""
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor
from omegaconf import DictConfig

from ..data.loader import Prefetcher
from ..data.sampler import GlobalBatchSampler
from ..models.layers.init import materialize, named_params
from ..models.registry import build_family
from ..models.weights import load_arrays, load_safetensors, net_arrays
from ..runtime import setup_device
from . import checkpoint as ckpt_io
from .batches import StepBatchBuilder
from .buckets import make_buckets
from .datasets import build_dataset
from .lr import lr_at
from .metrics import MetricsLog
from .precision import LossScaler, resolve_precision
from .step import TrainStep

log = logging.getLogger("vgen")


@dataclass
class World:
    """This process's place in the job: world = dp x sp, SP groups of consecutive ranks."""

    rank: int = 0
    size: int = 1
    sp: int = 1

    @property
    def dp(self):
        return self.size // self.sp

    @property
    def dp_rank(self):
        return self.rank // self.sp

    @property
    def is_main(self):
        return self.rank == 0


class Trainer:
    def __init__(self, cfg: DictConfig, run_dir: Path, world: Optional[World] = None):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.world = world or World()
        self.ckpt_root = self.run_dir / "checkpoints"

    # ---- setup -------------------------------------------------------------------------------

    def _checkpoint_to_resume(self) -> Optional[Path]:
        if self.cfg.resume == "none":
            return None
        if self.cfg.resume != "auto":
            return Path(self.cfg.resume)
        if self.world.is_main:
            ckpt_io.clean_partial(self.ckpt_root)
        return ckpt_io.find_latest(self.ckpt_root)

    def setup(self):
        cfg, s = self.cfg, self.cfg.schedule
        self.device = setup_device(cfg.device)
        self.policy = resolve_precision(cfg.precision.dtype, self.device, cfg.model.dtype_exempt)
        self.family = family = build_family(cfg.model)
        net = family.net
        self.resume_from = self._checkpoint_to_resume()
        state = ckpt_io.load_state(self.resume_from) if self.resume_from else None

        # weights in fp32 first: master copies and EMA are taken from them
        materialize(net, cfg.seed)
        if self.resume_from:
            load_arrays(net, ckpt_io.load_tensors(self.resume_from / "model.safetensors"), str(self.resume_from))
        elif cfg.model.pretrained:
            load_safetensors(net, cfg.model.pretrained)

        trainable = [(n, p) for n, p in named_params(net) if p.requires_grad]
        self.buckets = make_buckets(trainable, [list(b.get_parameters()) for b in family.blocks()],
                                    lambda n, nd: not family.no_decay(n, nd), ema=s.ema_decay > 0,
                                    accumulate=s.grad_accum > 1)
        p = cfg.precision
        self.scaler = LossScaler(self.policy.loss_scaling, p.loss_scale, p.dynamic_loss_scale, p.loss_scale_window,
                                 p.loss_scale_factor, p.min_loss_scale)
        self.start_step = 0
        if state is not None:
            self._restore(state)
        self._cast_model(net)
        self.step_fn = TrainStep(family.objective.loss_cell(net), self.buckets, beta1=s.beta1, beta2=s.beta2,
                                 eps=s.eps, weight_decay=s.weight_decay, grad_clip=s.grad_clip,
                                 loss_scaling=self.policy.loss_scaling, jit=cfg.jit)

        self.dataset = build_dataset(cfg.data, family)
        self.sampler = GlobalBatchSampler(len(self.dataset), s.batch_size, self.world.dp, s.grad_accum, cfg.seed,
                                          shuffle=cfg.data.get("shuffle", True))
        dropout = cfg.data.text_dropout if cfg.data.text_dropout is not None else family.text.dropout
        self.batches = StepBatchBuilder(self.dataset, family, self.sampler, seed=cfg.seed, dp_rank=self.world.dp_rank,
                                        text_dropout=dropout, skip_bad=cfg.data.skip_bad)
        return self

    def _cast_model(self, net):
        dtype = self.policy.compute_dtype
        if dtype == ms.float32:
            return
        for name, p in named_params(net):
            if p.requires_grad and not self.policy.keep_fp32(name):
                p.set_dtype(dtype)

    def _restore(self, state: dict):
        """Model weights were loaded into the net (and so into the masters); moments and EMA here."""
        d = self.resume_from
        opt = ckpt_io.load_tensors(d / "optimizer.safetensors")
        ema_file = d / "ema.safetensors"
        ema = ckpt_io.load_tensors(ema_file) if ema_file.is_file() else None
        for b in self.buckets:
            b.load_local("m", {n: opt["adam_m." + n] for n in b.names})
            b.load_local("v", {n: opt["adam_v." + n] for n in b.names})
            if b.ema is not None:
                b.load_local("ema", ema if ema is not None else ckpt_io.load_tensors(d / "model.safetensors"))
        self.scaler.load_state_dict(state["loss_scaler"])
        self.start_step = int(state["step"])
        log.info("resumed from %s at step %d", d, self.start_step)

    # ---- checkpoints -------------------------------------------------------------------------

    def _bucket_arrays(self, which: str, prefix: str = ""):
        out = {}
        for b in self.buckets:
            out.update({prefix + n: a for n, a in b.local_arrays(which).items()})
        return out

    def save(self, step: int):
        if not self.world.is_main:
            return
        model = net_arrays(self.family.net)  # buffers; trainable weights come from the fp32 masters
        model.update(self._bucket_arrays("master"))
        files = {"model.safetensors": model}
        if self.cfg.schedule.ema_decay > 0:
            files["ema.safetensors"] = {**model, **self._bucket_arrays("ema")}
        files["optimizer.safetensors"] = {**self._bucket_arrays("m", "adam_m."), **self._bucket_arrays("v", "adam_v.")}
        state = {
            "step": step,
            "loss_scaler": self.scaler.state_dict(),
            "data": {"next_step": step, "epoch": self.sampler.epoch_of(step),
                     "steps_per_epoch": self.sampler.steps_per_epoch, "global_batch": self.sampler.global_batch},
            "rng": {"seed": int(self.cfg.seed), "scheme": "keyed by (seed, step, global sample index, stream)"},
            "world": {"size": self.world.size, "dp": self.world.dp, "sp": self.world.sp},
            "precision": self.policy.name,
        }
        path = ckpt_io.save_checkpoint(self.ckpt_root, step, files, state, self.cfg.schedule.keep_last)
        log.info("saved %s", path)

    # ---- loop --------------------------------------------------------------------------------

    def _lr(self, update: int) -> float:
        s = self.cfg.schedule
        return lr_at(update, s.lr, s.warmup_steps, s.lr_schedule, s.decay_steps or s.max_steps, s.min_lr)

    def run(self) -> dict:
        cfg, s, w = self.cfg, self.cfg.schedule, self.world
        global_batch = self.sampler.global_batch
        if w.is_main:
            log.info("global batch %d = batch_size %d x dp %d x grad_accum %d | %s | %s | %d steps from %d",
                     global_batch, s.batch_size, w.dp, s.grad_accum, self.device, self.policy.name, s.max_steps,
                     self.start_step)
        if self.start_step >= s.max_steps:
            log.info("nothing to do: already at step %d of %d", self.start_step, s.max_steps)
            return {"step": self.start_step}
        metrics = MetricsLog(self.run_dir, self.start_step, s.max_steps, cfg.progress) if w.is_main else None
        prefetch = Prefetcher(self.batches.build, self.start_step, s.max_steps, cfg.data.prefetch)
        f32 = lambda v: Tensor(np.float32(v))
        window, last = [], {}
        t0 = time.perf_counter()  # step time runs from the end of one step to the end of the next
        try:
            for update in range(self.start_step, s.max_steps):
                step = update + 1
                waited0 = prefetch.waited_s
                batch = prefetch.get(update)
                lr = self._lr(update)
                hyper = (f32(lr), f32(1 - s.beta1 ** step), f32(1 - s.beta2 ** step), f32(s.ema_decay))
                scale, inv_scale = f32(self.scaler.scale), f32(1.0 / self.scaler.scale)
                if s.grad_accum == 1:
                    loss, norm = self.step_fn.fused(hyper, scale, inv_scale, tuple(map(Tensor, batch.micro[0].inputs)))
                else:
                    local = 0.0
                    for mb in batch.micro:
                        local += float(self.step_fn.micro(scale, f32(1.0 / s.grad_accum), inv_scale,
                                                          tuple(map(Tensor, mb.inputs))))
                    loss, norm = self.step_fn.finish_accumulated(hyper, f32(local / s.grad_accum))
                loss, norm = float(loss), float(norm)
                t1 = time.perf_counter()
                dt, t0 = t1 - t0, t1  # end to end: data, step, and the previous step's logging
                finite = math.isfinite(norm)
                scale_used = self.scaler.scale
                self.scaler.update(finite)
                window.append(loss)
                last = {"loss": loss, "lr": lr, "grad_norm": norm, "loss_scale": scale_used, "step_time_s": dt,
                        "samples_per_s": global_batch / dt, "data_wait_s": prefetch.waited_s - waited0,
                        "overflow": int(not finite), "overflows_total": self.scaler.overflows,
                        "data_skipped": batch.skipped}
                if metrics is not None:
                    metrics.advance(loss, lr, dt)
                    if step % s.log_every == 0 or step == s.max_steps:
                        metrics.log(step, {**last, "loss_avg": float(np.mean(window))})
                        window = []
                if step % s.ckpt_every == 0 or step == s.max_steps:
                    self.save(step)
        finally:
            prefetch.close()
            if metrics is not None:
                metrics.close()
        return {"step": s.max_steps, **last}


def train(cfg: DictConfig, run_dir: Path, world: Optional[World] = None) -> dict:
    return Trainer(cfg, run_dir, world).setup().run()
