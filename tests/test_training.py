"""End-to-end training: run directory, exact resume, killed checkpoints, jit vs PyNative,
gradient accumulation, precision policies, cached data."""
import json
import os
import signal

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor
from safetensors.numpy import load_file

from conftest import TINY, TINY_MODEL, cli, compose, read_metrics
from test_data import _write_cache
from vgen.config.validate import ConfigError
from vgen.models.layers.init import named_params
from vgen.train.trainer import Trainer

pytestmark = pytest.mark.slow


def run_inprocess(tmp_path, overrides, name="run", base=TINY):
    cfg = compose([*base, *overrides])
    run_dir = tmp_path / name
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, run_dir).setup()
    trainer.run()
    return trainer, read_metrics(run_dir)


def losses(metrics):
    return {m["step"]: m["loss"] for m in metrics}


def test_run_directory_contents(tmp_path):
    run = tmp_path / "r"
    cli("vgen-train", *TINY, "schedule.max_steps=6", "schedule.ckpt_every=2", "schedule.keep_last=2",
        "schedule.ema_decay=0.99", f"run_dir={run}", check=True)
    assert (run / "config.yaml").is_file()
    m = read_metrics(run)
    assert [x["step"] for x in m] == [1, 2, 3, 4, 5, 6]
    for key in ("step", "loss", "lr", "grad_norm", "loss_scale", "step_time_s", "samples_per_s"):
        assert key in m[-1]
    assert any(f.name.startswith("events.out.tfevents") for f in (run / "tb").iterdir())
    ck = run / "checkpoints"
    assert sorted(d.name for d in ck.iterdir() if d.is_dir()) == ["step_4", "step_6"]
    assert (ck / "latest").read_text().strip() == "step_6"
    step6 = ck / "step_6"
    state = json.loads((step6 / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["data"]["next_step"] == 6
    model = load_file(str(step6 / "model.safetensors"))
    assert "blocks.0.attn.qkv.weight" in model and model["blocks.0.attn.qkv.weight"].dtype == np.float32
    assert set(load_file(str(step6 / "ema.safetensors"))) == set(model)
    opt = load_file(str(step6 / "optimizer.safetensors"))
    assert "adam_m.blocks.0.attn.qkv.weight" in opt and "adam_v.final_layer.linear.weight" in opt
    # the same command continues the run: nothing left to do
    r = cli("vgen-train", *TINY, "schedule.max_steps=6", "schedule.ckpt_every=2", "schedule.keep_last=2",
            "schedule.ema_decay=0.99", f"run_dir={run}", check=True)
    assert "resumed from" in r.stderr and "nothing to do" in r.stderr


def test_resume_is_exact_and_survives_a_kill_mid_checkpoint(tmp_path):
    common = [*TINY, "schedule.ckpt_every=5", "schedule.ema_decay=0.9"]
    ref = tmp_path / "ref"
    cli("vgen-train", *common, "schedule.max_steps=20", f"run_dir={ref}", check=True)
    ref_loss = losses(read_metrics(ref))

    # 10 steps, then the same command with max_steps=20
    split = tmp_path / "split"
    cli("vgen-train", *common, "schedule.max_steps=10", f"run_dir={split}", check=True)
    cli("vgen-train", *common, "schedule.max_steps=20", f"run_dir={split}", check=True)
    got = losses(read_metrics(split))
    assert [got[s] for s in range(11, 21)] == [ref_loss[s] for s in range(11, 21)]

    # SIGKILL while writing the step-10 checkpoint: the next run resumes from step 5
    killed = tmp_path / "killed"
    r = cli("vgen-train", *common, "schedule.max_steps=20", f"run_dir={killed}",
            env={"VGEN_FAULT_KILL_IN_CHECKPOINT": "10"})
    assert r.returncode == -signal.SIGKILL
    ck = killed / "checkpoints"
    assert (ck / "latest").read_text().strip() == "step_5"
    assert any(d.name.startswith(".tmp-step_10") for d in ck.iterdir())
    r = cli("vgen-train", *common, "schedule.max_steps=20", f"run_dir={killed}", check=True)
    assert "at step 5" in r.stderr
    assert not any(d.name.startswith(".tmp-") for d in ck.iterdir())
    got = losses(read_metrics(killed))
    assert sorted(got) == list(range(1, 21))  # metrics after step 5 of the killed run were dropped
    assert [got[s] for s in range(6, 21)] == [ref_loss[s] for s in range(6, 21)]


def test_jit_and_pynative_give_the_same_losses(tmp_path):
    _, a = run_inprocess(tmp_path, ["schedule.max_steps=3", "jit=true"], "jit")
    _, b = run_inprocess(tmp_path, ["schedule.max_steps=3", "jit=false"], "pynative")
    np.testing.assert_allclose([m["loss"] for m in a], [m["loss"] for m in b], rtol=1e-5)
    np.testing.assert_allclose([m["grad_norm"] for m in a], [m["grad_norm"] for m in b], rtol=1e-4)


def test_grad_accumulation_equals_the_larger_batch(tmp_path):
    _, big = run_inprocess(tmp_path, ["schedule.max_steps=3", "schedule.batch_size=4"], "big")
    _, acc = run_inprocess(tmp_path, ["schedule.max_steps=3", "schedule.batch_size=2", "schedule.grad_accum=2"], "acc")
    np.testing.assert_allclose([m["loss"] for m in big], [m["loss"] for m in acc], rtol=1e-5)
    np.testing.assert_allclose([m["grad_norm"] for m in big], [m["grad_norm"] for m in acc], rtol=1e-4)


def test_cosine_schedule_and_warmup(tmp_path):
    _, m = run_inprocess(tmp_path, ["schedule.max_steps=6", "schedule.lr_schedule=cosine", "schedule.lr=1e-3",
                                    "schedule.min_lr=1e-4", "schedule.warmup_steps=2"])
    lrs = [x["lr"] for x in m]
    assert lrs[:2] == pytest.approx([5e-4, 1e-3])
    assert lrs[-1] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + np.cos(np.pi * 3 / 4)))
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


def test_fp16_overflow_skips_the_step_and_lowers_the_scale(tmp_path):
    trainer, m = run_inprocess(tmp_path, ["precision=fp16", "precision.loss_scale=1e30",
                                          "precision.loss_scale_factor=1e10", "schedule.max_steps=5"])
    assert m[0]["overflow"] == 1 and m[0]["loss_scale"] == pytest.approx(1e30)
    assert m[1]["loss_scale"] == pytest.approx(1e20)
    assert m[-1]["overflow"] == 0 and np.isfinite(m[-1]["grad_norm"]) and m[-1]["overflows_total"] >= 2
    assert trainer.scaler.scale < 1e30
    p = dict(named_params(trainer.family.net))["blocks.0.attn.qkv.weight"]
    assert p.dtype == ms.float16
    master = trainer.buckets[-1].master
    assert master.dtype == ms.float32


def test_fp16_overflow_leaves_weights_unchanged(tmp_path):
    cfg = compose([*TINY, "precision=fp16", "precision.loss_scale=1e30"])
    (tmp_path / "r").mkdir()
    tr = Trainer(cfg, tmp_path / "r").setup()
    before = {n: p.asnumpy().copy() for n, p in named_params(tr.family.net)}
    masters = [b.master.asnumpy().copy() for b in tr.buckets]
    batch = tr.data.inputs(tr.data.batches.build(0).micro[0])
    f32 = lambda v: Tensor(np.float32(v))
    loss, norm = tr.step_fn.fused((f32(1e-3), f32(0.1), f32(0.001), f32(0.0)), f32(1e30), f32(1e-30), batch)
    assert not np.isfinite(float(norm))
    for n, p in named_params(tr.family.net):
        np.testing.assert_array_equal(p.asnumpy(), before[n])
    for b, m0 in zip(tr.buckets, masters):
        np.testing.assert_array_equal(b.master.asnumpy(), m0)
        assert not b.m.asnumpy().any()


def test_bf16_on_cpu_fails_at_once_with_the_reason(tmp_path):
    r = cli("vgen-train", *TINY, "precision=bf16", f"run_dir={tmp_path / 'r'}")
    assert r.returncode == 2
    assert "no bf16" in r.stderr and "precision=fp32" in r.stderr


def _bf16_trainer(cfg, run_dir, monkeypatch):
    """A trainer under the bf16 policy on CPU (which refuses bf16 compute, not bf16 storage)."""
    import vgen.train.trainer as trainer_mod
    from vgen.train.precision import PrecisionPolicy

    monkeypatch.setattr(trainer_mod, "resolve_precision", lambda *a, **k: PrecisionPolicy("bf16", ms.bfloat16))
    return Trainer(cfg, run_dir).setup()


def test_bf16_master_weights_casts_and_checkpoint_dtypes(tmp_path, monkeypatch):
    """What CPU can run of bf16: bf16 model params, fp32 masters taken before the cast, fp32 updates,
    fp32 checkpoints, and a resume that restores the exact fp32 masters. (The in-graph copy of the
    masters into bf16 params needs a bf16 Assign kernel, which only Ascend/GPU have.)"""
    cfg = compose([*TINY, "precision=bf16", "schedule.ema_decay=0.9"])
    (tmp_path / "r").mkdir()
    (tmp_path / "ref").mkdir()
    ref = Trainer(compose(TINY), tmp_path / "ref").setup()  # the same init in fp32
    tr = _bf16_trainer(cfg, tmp_path / "r", monkeypatch)
    params = dict(named_params(tr.family.net))
    assert params["blocks.0.attn.qkv.weight"].dtype == ms.bfloat16
    assert params["pos_embed"].dtype == ms.float32  # buffers stay fp32
    for b, rb in zip(tr.buckets, ref.buckets):
        assert b.master.dtype == ms.float32 and b.ema.dtype == ms.float32
        np.testing.assert_array_equal(b.master.asnumpy(), rb.master.asnumpy())  # masters are not bf16-rounded
        for (n, full), p in zip(rb.full_arrays("master").items(), b.params):
            want = Tensor(full).astype(ms.bfloat16)
            np.testing.assert_array_equal(p.astype(ms.float32).asnumpy(), want.astype(ms.float32).asnumpy())
    # an fp32 update of the masters and the EMA (no write-back into bf16 params on CPU)
    f32 = lambda v: Tensor(np.float32(v))
    for b in tr.buckets:
        g = Tensor(np.full(b.local_size, 0.5, np.float32))
        tr.step_fn.ops.update(b.master, b.m, b.v, b.ema, b.decay_mask, g, f32(1e-2), f32(0.1), f32(0.001), f32(1.0),
                              None, f32(0.5), (), False)
    masters = {n: a for b in tr.buckets for n, a in b.full_arrays("master").items()}
    tr.save(1)
    saved = load_file(str(tmp_path / "r" / "checkpoints" / "step_1" / "model.safetensors"))
    assert all(a.dtype == np.float32 for a in saved.values())
    for n, a in masters.items():
        np.testing.assert_array_equal(saved[n], a)
    resumed = _bf16_trainer(cfg, tmp_path / "r", monkeypatch)
    assert resumed.start_step == 1
    for b, b0 in zip(resumed.buckets, tr.buckets):
        np.testing.assert_array_equal(b.master.asnumpy(), b0.master.asnumpy())
        np.testing.assert_array_equal(b.ema.asnumpy(), b0.ema.asnumpy())
        np.testing.assert_array_equal(b.m.asnumpy(), b0.m.asnumpy())
        assert all(p.dtype == ms.bfloat16 for p in b.params)


def test_trains_on_cached_latents_and_skips_bad_rows(tmp_path):
    root = _write_cache(tmp_path / "cache", 10, bad=(4,))
    data = ["data=cached", f"data.csv_path={root / 'train.csv'}", f"data.text_emb_dir={root / 't5'}",
            f"data.latent_dir={root / 'vae'}"]
    with pytest.raises(Exception, match="line 6"):
        run_inprocess(tmp_path, [*data, "schedule.max_steps=2"], "strict", base=TINY_MODEL)
    (root / "vae" / "clip_7.npz").write_bytes(b"broken")
    tr, m = run_inprocess(tmp_path, [*data, "data.skip_bad=true", "schedule.max_steps=4", "schedule.batch_size=2"],
                          "lenient", base=TINY_MODEL)
    assert len(m) == 4 and all(np.isfinite(x["loss"]) for x in m)
    assert tr.data.dataset.skipped_rows == 1
    assert sum(x["data_skipped"] for x in m) >= 1  # clip_7 is met once per epoch (4 steps = 2 epochs)


def test_lora_trains_adapters_only_and_merges_into_the_base(tmp_path):
    """A tiny HunyuanVideo DiT: full weights saved as the 'official' base, LoRA fine-tuning on it,
    adapter-only checkpoints, exact resume, and tools/merge_lora.py folding them back."""
    import subprocess
    import sys

    from safetensors.numpy import save_file

    from conftest import REPO
    from vgen.models.weights import net_arrays

    hy = ["model=hunyuan_tiny", "model.depth_double=1", "model.depth_single=1", "data=synthetic", "data.num_samples=8",
          "progress=false", "schedule.log_every=1", "schedule.ckpt_every=2", "schedule.lr=1e-3", "schedule.warmup_steps=0"]
    base_run = tmp_path / "base"
    base_run.mkdir()
    tr = Trainer(compose([*hy, "schedule.max_steps=1"]), base_run).setup()
    base = tmp_path / "base.safetensors"
    arrays = net_arrays(tr.family.net)
    rng = np.random.default_rng(0)
    for k in arrays:  # a 'pretrained' base: the zero-initialised gates and output layers carry weights
        if not arrays[k].any():
            arrays[k] = (rng.standard_normal(arrays[k].shape) * 0.05).astype(np.float32)
    save_file(arrays, str(base))
    lora = [*hy, f"model.pretrained={base}", "model.lora.rank=4", "model.lora.alpha=8"]
    run = tmp_path / "lora"
    cli("vgen-train", *lora, "schedule.max_steps=4", f"run_dir={run}", check=True)
    saved = load_file(str(run / "checkpoints" / "step_4" / "model.safetensors"))
    assert saved and all(".lora_" in k for k in saved)  # adapters only
    # resume to 6 equals an uninterrupted 6-step run
    cli("vgen-train", *lora, "schedule.max_steps=6", f"run_dir={run}", check=True)
    ref = tmp_path / "ref"
    cli("vgen-train", *lora, "schedule.max_steps=6", f"run_dir={ref}", check=True)
    assert losses(read_metrics(run)) == losses(read_metrics(ref))
    out = tmp_path / "merged.safetensors"
    subprocess.run([sys.executable, str(REPO / "tools" / "merge_lora.py"), str(base), str(run / "checkpoints" / "step_6"),
                    str(out)], check=True, capture_output=True)
    merged, adapters, b = load_file(str(out)), load_file(str(run / "checkpoints" / "step_6" / "model.safetensors")), \
        load_file(str(base))
    assert set(merged) == set(b)
    name = "double_blocks.0.img_attn_qkv"
    want = b[f"{name}.weight"] + 2.0 * adapters[f"{name}.lora_up.weight"] @ adapters[f"{name}.lora_down.weight"]
    np.testing.assert_allclose(merged[f"{name}.weight"], want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(merged[f"{name}.weight"], b[f"{name}.weight"])
