"""Video-DPO on flow matching: the loss against Diffusion-DPO's formula written out in float64 numpy
from direct calls of the tiny Step-Video DiT, the LoRA reference (adapters off) against a net that
never had adapters, the frozen-copy reference against the starting weights, and the pairs CSV."""
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from conftest import compose, tool_module
from tiny_tokenizers import write_step_tokenizers
from vgen.data.errors import DataError
from vgen.models.layers.init import named_params
from vgen.models.lora import adapters_disabled, apply_lora
from vgen.models.registry import build_family
from vgen.models.weights import fill_parameters
from vgen.objectives.dpo import FlowDPO
from vgen.runtime import setup_device
from vgen.train.reference import Reference

setup_device("auto")
B, BETA = 3, 500.0


def tiny(lora: bool):
    cfg = compose(["model=stepvideo_tiny", "model.depth=1"])
    family = build_family(cfg.model)
    fill_parameters(family.net, seed=0)
    if lora:  # adapters that change the output: B drawn instead of zeros
        apply_lora(family.net, 4, 4.0, list(family.spec.lora_targets), seed=0)
        rng = np.random.default_rng(1)
        for name, p in named_params(family.net):
            if name.endswith("lora_up.weight"):
                p.set_data(Tensor(rng.normal(0, 0.2, p.shape).astype(np.float32)))
    family.objective = FlowDPO(family.objective, BETA)
    return family


def pair_batch(seed=0):
    rng = np.random.default_rng(seed)
    shape = (B, 8, 3, 8, 8)
    mask = np.ones((B, 16), np.float32)
    mask[:, 10:] = 0
    return {"latent": rng.standard_normal(shape, dtype=np.float32),
            "latent_rejected": rng.standard_normal(shape, dtype=np.float32),
            "noise": rng.standard_normal(shape, dtype=np.float32),
            "t": rng.uniform(0.05, 0.95, B).astype(np.float32),
            "text_emb": rng.standard_normal((B, 16, 32), dtype=np.float32), "text_mask": mask,
            "text_pooled": rng.standard_normal((B, 8, 16), dtype=np.float32)}


def direct_errors(net, b):
    """Step-Video's convention by hand: x_s = (1 - s) x0 + s eps, the DiT sees t = 1 - s, target x0 - eps."""
    out = []
    for key in ("latent", "latent_rejected"):
        s = b["t"].astype(np.float64)[:, None, None, None, None]
        x_s = ((1 - s) * b[key] + s * b["noise"]).astype(np.float32)
        v = net(Tensor(x_s), Tensor(1 - b["t"]), Tensor(b["text_emb"]), Tensor(b["text_mask"]),
                Tensor(b["text_pooled"])).asnumpy().astype(np.float64)
        out.append(((v - (b[key] - b["noise"]).astype(np.float64)) ** 2).reshape(B, -1).mean(1))
    return np.stack(out, 1)


def dpo_formula(e, r, beta):
    z = -0.5 * beta * ((e[:, 0] - e[:, 1]) - (r[:, 0] - r[:, 1]))
    return np.log1p(np.exp(-z))  # -log sigmoid(z)


def as_tensors(b):
    return {k: Tensor(v) for k, v in b.items()}


def test_loss_and_lora_reference_match_the_formula():
    family, base = tiny(lora=True), tiny(lora=False)
    b = pair_batch()
    e = direct_errors(family.net, b)
    r = direct_errors(base.net, b)  # the net before adapters: what adapters_off must reproduce
    assert np.abs(e - r).max() > 1e-3  # the adapters do change the errors
    with adapters_disabled(family.net):
        np.testing.assert_allclose(direct_errors(family.net, b), r, rtol=1e-5)

    loss_cell = family.make_loss_cell()

    @ms.jit
    def loss(batch):
        return loss_cell(batch)

    ref = Reference(family.objective.pair_errors(family.net, family.denoise), lora_net=family.net, jit=True)
    inputs = as_tensors(b)
    # compiled in both orders and called alternately: each graph keeps its own path
    for _ in range(2):
        ref_error = ref(inputs).asnumpy()
        np.testing.assert_allclose(ref_error, r, rtol=1e-4)
        got = loss(ms.mutable({**inputs, "ref_error": Tensor(ref_error)})).asnumpy()
        np.testing.assert_allclose(got, dpo_formula(e, ref_error.astype(np.float64), BETA), rtol=1e-4, atol=1e-6)
    # the model as its own reference: every pair's loss is log 2
    same = loss(ms.mutable({**inputs, "ref_error": Tensor(e.astype(np.float32))})).asnumpy()
    np.testing.assert_allclose(same, np.log(2.0), rtol=1e-4)


def test_loss_is_stable_for_large_margins():
    """softplus form: no overflow when beta times the margin is large either way."""
    from vgen.objectives.dpo import neg_log_sigmoid

    z = np.array([-200.0, -5.0, 0.0, 5.0, 200.0], np.float32)
    got = neg_log_sigmoid(Tensor(z)).asnumpy()
    want = np.logaddexp(0.0, -z.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # its gradient is sigmoid(z) - 1, also at z = 0 (the first step: the model is its reference)
    grad = ms.grad(lambda x: neg_log_sigmoid(x).sum())(Tensor(z)).asnumpy()
    np.testing.assert_allclose(grad, 1.0 / (1.0 + np.exp(-z.astype(np.float64))) - 1.0, atol=1e-6)


def test_frozen_copy_reference_is_the_starting_model(tmp_path):
    """Without LoRA the reference is a second net with the run's starting weights: the seeded
    initialisation (or model.pretrained); it stays fixed while the trained net moves."""
    from vgen.parallel.mesh import Mesh
    from vgen.train.reference import frozen_copy

    cfg = compose(["model=stepvideo_tiny", "model.depth=1", "dpo.enabled=true", "data=video",
                   f"data.csv_path={tmp_path / 'pairs.csv'}", "seed=0"])
    copy = frozen_copy(cfg, Mesh(), lambda net: None)
    assert not any(p.requires_grad for _, p in named_params(copy.net))
    b = pair_batch(1)
    np.testing.assert_allclose(direct_errors(copy.net, b), direct_errors(tiny(lora=False).net, b), rtol=1e-6)


def test_config_checks():
    from vgen.config.validate import ConfigError, validate

    with pytest.raises(ConfigError, match="dpo.reference=adapters_off needs LoRA"):
        validate(compose(["model=stepvideo_tiny", "data=video", "data.csv_path=x.csv", "dpo.enabled=true",
                          "dpo.reference=adapters_off"]))
    with pytest.raises(ConfigError, match="preference pairs come from a video CSV"):
        validate(compose(["model=stepvideo_tiny", "data=synthetic", "dpo.enabled=true"]))
    with pytest.raises(ConfigError, match="flow-matching families"):
        validate(compose(["model=opensora_stdit_tiny", "data=video", "data.csv_path=x.csv", "dpo.enabled=true"]))
    with pytest.raises(ConfigError, match="dpo.beta=0"):
        validate(compose(["model=stepvideo_tiny", "data=video", "data.csv_path=x.csv", "dpo.enabled=true",
                          "dpo.beta=0"]))


# ---- the pairs CSV ------------------------------------------------------------------------------------

def write_clips(folder: Path, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")  # existence is what the reader checks (check_files)


def pairs_cfg(csv: Path, *more):
    return compose(["model=stepvideo_tiny", "data=video", f"data.csv_path={csv}", "dpo.enabled=true",
                    "data.video_column=chosen", *more]).data


def test_pairs_share_clips_and_name_bad_rows(tmp_path):
    from vgen.data.preference import read_pairs

    write_clips(tmp_path / "v", ["a.mp4", "b.mp4", "c.mp4", "d.mp4"])
    csv = tmp_path / "pairs.csv"
    csv.write_text("caption,chosen,rejected\n"
                   "a fox,v/a.mp4,v/b.mp4\n"
                   "a fox,v/a.mp4,v/c.mp4\n"  # a clip in two pairs: one record
                   "a fox,v/c.mp4,v/b.mp4\n")
    records, pairs, root, problems = read_pairs(pairs_cfg(csv), "rejected", check_files=True, metadata=False)
    assert [Path(r.path).name for r in records] == ["a.mp4", "b.mp4", "c.mp4"] and not problems
    assert pairs == [(2, 0, 1), (3, 0, 2), (4, 2, 1)]

    csv.write_text("caption,chosen,rejected\n"
                   "a fox,v/a.mp4,v/b.mp4\n"
                   "a cat,v/a.mp4,v/d.mp4\n"  # a's prompt was "a fox"
                   "a fox,v/c.mp4,v/c.mp4\n"  # chosen = rejected
                   "a fox,v/c.mp4,v/missing.mp4\n")
    records, pairs, root, problems = read_pairs(pairs_cfg(csv), "rejected", check_files=True, metadata=False)
    assert pairs == [(2, 0, 1)]
    lines = dict(problems)
    assert set(lines) == {3, 4, 5}
    assert "caption differs from line 2" in lines[3] and "same clip" in lines[4]
    assert "rejected (rejected)" in lines[5] and "missing.mp4" in lines[5]

    from vgen.data.preference import build_preference_dataset

    with pytest.raises(DataError, match="line 5"):
        build_preference_dataset(pairs_cfg(csv), "rejected")
    with pytest.raises(DataError, match="lacks column"):
        build_preference_dataset(pairs_cfg(csv), "worse")


# ---- end to end: caches over a pairs CSV, the recipes on the tiny model --------------------------------

@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """6 clips, two prompts, every pair of clips of a prompt ranked: 6 pairs over 6 clips, each clip in 2."""
    import pandas as pd

    root = tmp_path_factory.mktemp("dpo")
    csv = Path(tool_module("make_quickstart_data").build(str(root / "data"), num=6, seed=0, num_images=0))
    clips = list(pd.read_csv(csv)["video"])
    prompts = ["a red square moving left", "a blue circle moving up"]
    rows = [(prompts[g], clips[3 * g + a], clips[3 * g + b]) for g in range(2) for a, b in ((0, 1), (0, 2), (1, 2))]
    pairs_csv = root / "data" / "pairs.csv"
    pd.DataFrame(rows, columns=["caption", "chosen", "rejected"]).to_csv(pairs_csv, index=False)
    write_step_tokenizers(root, prompts)
    return {"root": root, "csv": pairs_csv}


def dpo_overrides(p, recipe="stepvideo/dpo_lora", *more):
    return [f"experiment={recipe}", "model=stepvideo_tiny", "model.depth=1", f"data.csv_path={p['csv']}",
            f"data.cache_dir={p['root'] / 'cache'}", f"model.text_encoder.tokenizer={p['root'] / 'step'}",
            f"model.text_encoder_2.tokenizer={p['root'] / 'bert'}", "data.num_frames=17", "data.resolution=[32,32]",
            "data.frame_stride=1", "parallel.workers=1", "parallel.sp=1", "parallel.zero_stage=0",
            "parallel.recompute=none", "schedule.batch_size=2", "schedule.warmup_steps=0", "schedule.lr=1e-5",
            "schedule.log_every=1", "schedule.ckpt_every=2", "progress=false", "model.pretrained=null", *more]


@pytest.fixture(scope="module")
def caches(pairs):
    from vgen.cli import cache as cache_cli

    for kind in ("text", "vae"):
        cache_cli.run(kind, dpo_overrides(pairs))
    return pairs


@pytest.mark.slow
def test_caches_hold_each_clip_of_the_pairs_once(caches):
    import pandas as pd

    from vgen.data.manifest import latent_folder, text_folder

    clips = sorted({str(Path(c).with_suffix("")) for col in ("chosen", "rejected")
                    for c in pd.read_csv(caches["csv"])[col]})
    cache = caches["root"] / "cache"
    assert sorted(str(p.relative_to(text_folder(cache)).with_suffix(""))
                  for p in text_folder(cache).rglob("clip_*.npz")) == clips
    assert sorted(str(p.relative_to(latent_folder(cache, 32, 32)).with_suffix(""))
                  for p in latent_folder(cache, 32, 32).rglob("clip_*.npz")) == clips


@pytest.mark.slow
@pytest.mark.parametrize("recipe,resumed", [("stepvideo/dpo_lora", False), ("stepvideo/dpo", True)])
def test_dpo_recipes_train_from_log2_and_resume_exactly(caches, tmp_path, recipe, resumed):
    """The first step's loss is log 2 (the model is its reference) and the model learns; a full-DPO
    run resumed at step 2 continues exactly as one that was not interrupted (its frozen copy rebuilt
    from the starting weights, not from the checkpoint)."""
    from conftest import read_metrics
    from vgen.train.trainer import Trainer

    base = dpo_overrides(caches, recipe, "data.latents=cache", "data.text=cache")
    whole, part = tmp_path / "whole", tmp_path / "part"
    Trainer(compose([*base, "schedule.max_steps=3"]), whole).setup().run()
    want = [m["loss"] for m in read_metrics(whole)]
    np.testing.assert_allclose(want[0], np.log(2.0), rtol=1e-5)
    assert want[2] != pytest.approx(np.log(2.0), rel=1e-4)  # it learns
    if resumed:
        Trainer(compose([*base, "schedule.max_steps=2"]), part).setup().run()
        Trainer(compose([*base, "schedule.max_steps=3"]), part).setup().run()
        np.testing.assert_allclose([m["loss"] for m in read_metrics(part)], want, rtol=1e-5)


@pytest.mark.slow
def test_dpo_online_encodes_both_clips(caches, tmp_path):
    """Online VAE: the rejected clip is decoded and encoded with its own keyed VAE noise."""
    from conftest import read_metrics
    from vgen.train.trainer import Trainer

    run = tmp_path / "online"
    Trainer(compose([*dpo_overrides(caches), "data.latents=online", "data.text=cache",
                     "schedule.max_steps=2"]), run).setup().run()
    m = read_metrics(run)
    np.testing.assert_allclose(m[0]["loss"], np.log(2.0), rtol=1e-5)
    assert np.isfinite(m[1]["loss"])
