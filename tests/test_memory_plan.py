"""The memory plan (vgen.train.memory_plan.py, vgen-plan, vgen-train's first lines) against the
bytes a built trainer holds, kind by kind, and for full-size models from shapes alone."""
import tempfile

import numpy as np
import pytest

from conftest import cli, compose
from vgen.train.memory_plan import plan_memory


def held_bytes(trainer) -> dict:
    """What the trainer's rank holds: its parameters, one step's gradients with their flat fp32
    copies and accumulators, the fp32 masters, moments and EMA."""
    from vgen.models.layers.init import named_params

    def nbytes(p):
        return int(np.prod(p.shape)) * p.itemsize if len(p.shape) else p.itemsize

    grads = sum(nbytes(p) for b in trainer.buckets for p in b.params) + sum(b.local_size * 4 for b in trainer.buckets)
    grads += sum(b.grad_acc.nbytes for b in trainer.buckets if b.grad_acc is not None)
    optimizer = sum(b.master.nbytes + b.m.nbytes + b.v.nbytes + (b.ema.nbytes if b.ema is not None else 0)
                    for b in trainer.buckets)
    return {"params": sum(nbytes(p) for _, p in named_params(trainer.family.net)), "grads": grads,
            "optimizer": optimizer}


@pytest.mark.parametrize("extra", [[], ["schedule.ema_decay=0.99", "schedule.grad_accum=2"],
                                   ["model.lora.rank=4", "model.lora.targets=[blocks.*.attn.qkv]"]])
def test_plan_equals_what_the_trainer_holds(extra):
    from vgen.train.trainer import Trainer

    cfg = compose(["model=opensora_stdit_tiny", "data=synthetic", "data.num_samples=8", *extra])
    plan = plan_memory(cfg, "CPU")
    held = held_bytes(Trainer(cfg, tempfile.mkdtemp()).setup())
    assert {k: plan.bytes[k] for k in held} == held


def test_full_size_plans_come_from_shapes():
    cfg = compose(["model=hunyuan", "parallel=zero3", "parallel.workers=8", "precision=bf16"])
    plan = plan_memory(cfg, "Ascend")
    n = 12_821_012_544
    assert plan.counts == {"all": n, "trained": n, "sharded": n}
    # bf16 parameters and gradients, fp32 flat gradients, masters and two moments: all sharded over 8
    assert abs(plan.bytes["params"] - n * 2 / 8) < 1e6 and abs(plan.bytes["optimizer"] - n * 12 / 8) < 1e7
    assert 0 < plan.bytes["gathered"] < plan.bytes["params"]  # one block at a time (recompute on every block)


def test_vgen_plan_prints_the_plan():
    r = cli("vgen-plan", "model=stepvideo", "parallel=zero3", "parallel.workers=8", "precision=bf16", check=True)
    assert "29,342,478,400 parameters" in r.stdout and "optimizer" in r.stdout and "total" in r.stdout
