"""The one training loop, for every family.

Setup order: device -> mesh (dp x sp) -> family -> weights in fp32 (checkpoint, pretrained or
fresh init) -> LoRA -> parallelize (SP on the seams and attention cores, recompute on the blocks,
ZeRO-3 on the layers; vgen/parallel/plan.py) -> flat buckets (fp32 masters, AdamW moments, EMA;
sharded for ZeRO) -> cast to the compute dtype -> the data pipeline -> loop.
"""
import logging
import math
import time
from pathlib import Path
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor
from omegaconf import DictConfig

from ..models.layers.init import named_params
from ..models.lora import adapt_family, adapter_names
from ..models.registry import build_family
from ..models.weights import check_layout, fill_parameters, layout_problems, open_pretrained
from ..objectives.dpo import FlowDPO
from ..parallel.comm import barrier
from ..parallel.mesh import Mesh
from ..parallel.plan import parallelize, sharded_names
from ..runtime import setup_device
from . import checkpoint as ckpt_io
from .flat_params import make_buckets
from .distill import Distillation, distillation_objective
from .lr import lr_at
from .metrics import MetricsLog
from .pipeline import DataPipeline
from .precision import LossScaler, cast_model, resolve_precision
from .reference import build_reference
from .step import TrainStep

log = logging.getLogger("vgen")


class Trainer:
    def __init__(self, cfg: DictConfig, run_dir: Path, mesh: Optional[Mesh] = None):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.mesh = mesh or Mesh()
        self.ckpt_root = self.run_dir / "checkpoints"

    def _barrier(self):
        if self.mesh.size > 1:
            barrier()

    # ---- setup -------------------------------------------------------------------------------

    def _checkpoint_to_resume(self) -> Optional[Path]:
        if self.cfg.resume == "none":
            return None
        if self.cfg.resume != "auto":
            return Path(self.cfg.resume)
        if self.mesh.is_main:
            ckpt_io.clean_partial(self.ckpt_root)
        self._barrier()
        return ckpt_io.find_latest(self.ckpt_root)

    def setup(self):
        cfg, s, p = self.cfg, self.cfg.schedule, self.cfg.parallel
        self.device = setup_device(cfg.device)
        self.policy = resolve_precision(cfg.precision.dtype, self.device, cfg.model.dtype_exempt)
        self.family = family = build_family(cfg.model)
        if cfg.dpo.enabled:  # a preference stage on the family's flow matching
            family.objective = FlowDPO(family.objective, cfg.dpo.beta)
        if cfg.distill.enabled:  # a consistency student of the family's diffusion model
            family.objective = distillation_objective(family, cfg, self.mesh.rank)
        net = family.net
        self.resume_from = self._checkpoint_to_resume()
        reader = ckpt_io.CheckpointReader(self.resume_from) if self.resume_from else None

        # state the model carries but does not train (buffers, fixed tables such as rope.freqs):
        # saved with every checkpoint; a LoRA base, frozen below, is not (it is model.pretrained)
        fixed = [n for n, q in named_params(net) if not q.requires_grad]
        lora = cfg.model.lora
        if lora.rank > 0:  # adapters on the frozen base; checkpoints then hold the adapters only
            adapted = adapt_family(family, lora, cfg.seed)
            if self.mesh.is_main:
                log.info("LoRA rank %d on %d layers; the base stays frozen", lora.rank, len(adapted))
        trainable = [(n, q) for n, q in named_params(net) if q.requires_grad]
        shapes = {n: tuple(q.shape) for n, q in named_params(net)}  # declared: nothing is allocated yet
        sharded = sharded_names(family, self.mesh, p)

        # the weights, in fp32 (masters and EMA start from them), each from the first source that has
        # it: the checkpoint resumed, model.pretrained, else the initialisation; under ZeRO-3 every
        # rank reads and keeps only its segments of the sharded parameters
        sources = []
        if reader is not None:
            ckpt = reader.weights("model")
            expected = {n: shapes[n] for n in fixed + [n for n, _ in trainable]}
            check_layout(str(self.resume_from), *layout_problems(expected, ckpt.shapes), strict=True)
            sources.append(ckpt)
        if cfg.model.pretrained and (reader is None or lora.rank > 0):
            sources.append(open_pretrained(cfg.model.pretrained, net, family.init_only, adapter_names(net)))
        if lora.rank > 0 and lora.pretrained and reader is None:
            sources.append(ckpt_io.open_adapters(lora.pretrained, {n: shapes[n] for n in adapter_names(net)}))
        fill_parameters(net, cfg.seed, sources, sharded, self.mesh.size, self.mesh.rank)
        fixed = set(fixed)
        self.fixed = {n: q.asnumpy() for n, q in named_params(net) if n in fixed}

        plan = parallelize(family, self.mesh, p, shapes, sharded)
        self.sync = plan.sync
        self.buckets = make_buckets(trainable, [list(b.get_parameters()) for b in plan.blocks],
                                    lambda n, nd: not family.no_decay(n, nd), shapes, sharded_ids=plan.sharded,
                                    shards=self.sync.shards, shard_rank=self.sync.shard_rank, ema=s.ema_decay > 0,
                                    accumulate=s.grad_accum > 1, accumulate_full=self.sync.zero_stage < 2)
        self.scaler = LossScaler(self.policy.loss_scaling, cfg.precision.loss_scale, cfg.precision.dynamic_loss_scale,
                                 cfg.precision.loss_scale_window, cfg.precision.loss_scale_factor,
                                 cfg.precision.min_loss_scale)
        self.data = DataPipeline(cfg, family, self.mesh.dp, self.mesh.dp_rank)
        if s.get("epochs"):  # passes over the data: the step count follows from the sampler's epochs
            s.max_steps = self.data.sampler.first_step_of(s.epochs)
            if self.mesh.is_main:
                log.info("schedule.epochs=%d: %d steps", s.epochs, s.max_steps)
        self.start_step = 0
        if reader is not None:
            self._restore(reader)
        self._cast_model(net)
        self.step_fn = TrainStep(family.make_loss_cell(), self.buckets, sync=self.sync, beta1=s.beta1,
                                 beta2=s.beta2, eps=s.eps, weight_decay=s.weight_decay, grad_clip=s.grad_clip,
                                 loss_scaling=self.policy.loss_scaling, jit=cfg.jit)
        self.reference = build_reference(cfg, family, self.mesh, self._cast_model) if cfg.dpo.enabled else None
        self.distillation = (Distillation(cfg, family, self.mesh, self.buckets, self.sync, self._cast_model)
                             if cfg.distill.enabled else None)
        self.validation = None
        if s.val_every > 0:
            from .validation import Validation

            self.validation = Validation(cfg, family, self.buckets, self.sync, self.mesh, self.data)
        return self

    def _cast_model(self, net):
        cast_model(net, self.policy)

    def _restore(self, reader: ckpt_io.CheckpointReader):
        """Model weights are in the net (and so in the masters); moments, EMA, the loss scale and
        the sampler's position here. Works whatever worker count or ZeRO stage wrote the checkpoint."""
        arrays = ckpt_io.read_state(reader)
        for b in self.buckets:
            b.load_state_dict(arrays)
        state = reader.state()
        self.scaler.load_state_dict(state["loss_scaler"])
        self.data.load_state_dict(state.get("data"))
        self.start_step = int(state["step"])
        if self.mesh.is_main:
            log.info("resumed from %s at step %d", reader.path, self.start_step)

    # ---- checkpoints -------------------------------------------------------------------------

    def save(self, step: int):
        """Whole files from rank 0 without sharding; every rank's segments (and an index) with."""
        if self.device != "CPU":  # in-place updates of compiled steps may still be in flight
            ms.runtime.synchronize()
        w = ckpt_io.CheckpointWriter(self.ckpt_root, step, self.mesh.is_main, self._barrier).begin()
        ckpt_io.write_state(w, self.buckets, self.fixed, self.sync.shards, self.sync.shard_rank, self.mesh.is_main)
        state = {
            "step": step,
            "loss_scaler": self.scaler.state_dict(),
            "data": self.data.state_dict(step),
            "rng": {"seed": int(self.cfg.seed), "scheme": "keyed by (seed, step, global sample index, stream)"},
            "world": {"size": self.mesh.size, "dp": self.mesh.dp, "sp": self.mesh.sp,
                      "zero_stage": self.sync.zero_stage, "shards": self.sync.shards},
            "precision": self.policy.name,
        }
        path = w.commit(state, self.cfg.schedule.keep_last)
        if self.mesh.is_main:
            log.info("saved %s", path)

    # ---- loop --------------------------------------------------------------------------------

    def _lr(self, update: int) -> float:
        s = self.cfg.schedule
        return lr_at(update, s.lr, s.warmup_steps, s.lr_schedule, s.decay_steps or s.max_steps, s.min_lr)

    def _inputs(self, micro) -> dict:
        """The loss cell's named inputs; in a preference stage with the reference's errors, in a
        distillation stage with the teacher's step and the target's prediction."""
        inputs = self.data.inputs(micro)
        if self.reference is not None:
            inputs["ref_error"] = self.reference(inputs)
        if self.distillation is not None:
            inputs = self.distillation(inputs)
        return inputs

    def run(self) -> dict:
        cfg, s, mesh = self.cfg, self.cfg.schedule, self.mesh
        if mesh.is_main:
            if hasattr(self.data.sampler, "histogram"):
                from ..data.buckets import format_histogram

                log.info("buckets (epoch %d):\n%s", self.data.sampler.epoch_of(self.start_step),
                         format_histogram(self.data.sampler.histogram(self.data.sampler.epoch_of(self.start_step))))
                log.info("global batch per bucket = bucket batch size x dp %d x grad_accum %d (sp %d) | %s | %s | "
                         "steps %d -> %d", mesh.dp, s.grad_accum, mesh.sp, self.device, self.policy.name,
                         self.start_step, s.max_steps)
            else:
                log.info("global batch %d = batch_size %d x dp %d x grad_accum %d (sp %d) | %s | %s | steps %d -> %d",
                         self.data.sampler.global_batch, s.batch_size, mesh.dp, s.grad_accum, mesh.sp, self.device,
                         self.policy.name, self.start_step, s.max_steps)
        if self.start_step >= s.max_steps:
            if mesh.is_main:
                log.info("nothing to do: already at step %d of %d", self.start_step, s.max_steps)
            return {"step": self.start_step}
        if mesh.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        metrics = MetricsLog(self.run_dir, self.start_step, s.max_steps, cfg.progress) if mesh.is_main else None
        data = self.data
        data.start(self.start_step, s.max_steps)
        f32 = lambda v: Tensor(np.float32(v))
        window, last = [], {}
        t0 = time.perf_counter()  # step time runs from the end of one step to the end of the next
        try:
            for update in range(self.start_step, s.max_steps):
                step = update + 1
                waited0 = data.waited_s
                batch = data.get(update)
                lr = self._lr(update)
                hyper = (f32(lr), f32(1 - s.beta1 ** step), f32(1 - s.beta2 ** step), f32(s.ema_decay))
                scale, inv_scale = f32(self.scaler.scale), f32(1.0 / self.scaler.scale)
                if s.grad_accum == 1:
                    loss, norm = self.step_fn.fused(hyper, scale, inv_scale, self._inputs(batch.micro[0]))
                else:
                    local = 0.0
                    for mb in batch.micro:
                        local += float(self.step_fn.micro(scale, f32(1.0 / s.grad_accum), inv_scale, self._inputs(mb)))
                    loss, norm = self.step_fn.finish_accumulated(hyper, f32(local / s.grad_accum))
                loss, norm = float(loss), float(norm)
                t1 = time.perf_counter()
                dt, t0 = t1 - t0, t1  # end to end: data, step, and the previous step's logging
                finite = math.isfinite(norm)
                scale_used = self.scaler.scale
                self.scaler.update(finite)
                window.append(loss)
                last = {"loss": loss, "lr": lr, "grad_norm": norm, "loss_scale": scale_used, "step_time_s": dt,
                        "samples_per_s": self.data.sampler.global_batch_of(update) / dt, "data_wait_s": data.waited_s - waited0,
                        "overflow": int(not finite), "overflows_total": self.scaler.overflows,
                        "data_skipped": batch.skipped}
                if batch.shape is not None:
                    last["bucket"] = "x".join(map(str, batch.shape))
                if metrics is not None:
                    metrics.advance(loss, lr, dt)
                    if step % s.log_every == 0 or step == s.max_steps:
                        metrics.log(step, {**last, "loss_avg": float(np.mean(window))})
                        window = []
                if step % s.ckpt_every == 0 or step == s.max_steps:
                    self.save(step)
                if self.validation is not None and step % s.val_every == 0:
                    measured = self.validation(step, self.run_dir, metrics)
                    if metrics is not None:
                        metrics.validation(step, measured)
                    t0 = time.perf_counter()  # the next step's time leaves validation out
        finally:
            data.close()
            if metrics is not None:
                metrics.close()
        return {"step": s.max_steps, **last}


def train(cfg: DictConfig, run_dir: Path, mesh: Optional[Mesh] = None) -> dict:
    return Trainer(cfg, run_dir, mesh).setup().run()
