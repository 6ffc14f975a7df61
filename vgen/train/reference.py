"""The frozen reference of a preference (DPO) stage: per micro-batch, its velocity errors on the
chosen and rejected clips ([B, 2], objectives/dpo.py PairErrors) from one forward-only compiled
call before the train step, given to the DPO loss as `ref_error`.

  adapters_off  the training net itself with every LoRA adapter skipped (lora.adapters_disabled):
                the base the adapters started from, at no memory cost;
  frozen_copy   a second net of the family holding the weights the run started from
                (model.pretrained, else the same seeded initialisation), parallelized like the model
                (SP seams and cores; under ZeRO-3 every rank keeps its segments of the copy's layers
                and gathers them per use), frozen.
"""
import logging

import mindspore as ms

from ..models.layers.init import named_params
from ..models.lora import adapters_disabled
from ..models.registry import build_family
from ..models.weights import SafetensorsWeights, fill_parameters
from ..objectives.denoise import plain_denoise
from ..parallel.plan import parallelize, sharded_names

log = logging.getLogger("vgen")


class Reference:
    def __init__(self, cell, lora_net=None, jit: bool = True):
        self.cell, self.lora_net = cell, lora_net
        self.errors = ms.jit(self._errors) if jit else self._errors

    def _errors(self, batch):
        return self.cell(batch)

    def __call__(self, inputs: dict):
        if self.lora_net is None:
            return self.errors(ms.mutable(inputs))
        with adapters_disabled(self.lora_net):  # this graph is only ever compiled and run in here
            return self.errors(ms.mutable(inputs))


def reference_kind(cfg) -> str:
    kind = cfg.dpo.reference
    if kind == "auto":
        return "adapters_off" if cfg.model.lora.rank > 0 else "frozen_copy"
    return kind


def frozen_copy(cfg, mesh, cast):
    """A second, frozen family net with the run's starting weights, parallelized as the model is."""
    copy = build_family(cfg.model)
    shapes = {n: tuple(q.shape) for n, q in named_params(copy.net)}
    sharded = sharded_names(copy, mesh, cfg.parallel)
    sources = [SafetensorsWeights(cfg.model.pretrained)] if cfg.model.pretrained else []
    fill_parameters(copy.net, cfg.seed, sources, sharded, mesh.size, mesh.rank)
    parallelize(copy, mesh, cfg.parallel, shapes, sharded)
    for _, q in named_params(copy.net):
        q.requires_grad = False
    cast(copy.net)
    return copy


def build_reference(cfg, family, mesh, cast) -> Reference:
    """The reference of cfg.dpo for the family being trained (its objective is FlowDPO)."""
    kind = reference_kind(cfg)
    if kind == "adapters_off":
        cell = family.objective.pair_errors(family.net, family.denoise or plain_denoise)
        ref = Reference(cell, lora_net=family.net, jit=cfg.jit)
    else:
        copy = frozen_copy(cfg, mesh, cast)
        ref = Reference(family.objective.pair_errors(copy.net, copy.denoise or plain_denoise), jit=cfg.jit)
    if mesh.is_main:
        log.info("DPO: beta %g, reference %s", family.objective.beta, kind)
    return ref
