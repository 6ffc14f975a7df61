import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO, cli, compose
from vgen.cli.common import freeze
from vgen.config.rundir import run_name
from vgen.config.validate import ConfigError, parse_recompute, validate


def test_defaults_compose_and_validate():
    cfg = compose()
    validate(cfg)
    assert cfg.model.family == "opensora_stdit"
    assert cfg.precision.dtype == "auto" and cfg.device == "auto" and cfg.resume == "auto"
    for key in ("max_steps", "lr", "warmup_steps", "lr_schedule", "batch_size", "grad_accum", "weight_decay",
                "grad_clip", "ema_decay", "log_every", "ckpt_every", "keep_last"):
        assert key in cfg.schedule
    for key in ("workers", "sp", "zero_stage", "recompute"):
        assert key in cfg.parallel


@pytest.mark.parametrize("override,names", [
    ("schedule.lrr=1", ["lrr"]),
    ("schedule.max_steps=abc", ["schedule.max_steps", "abc"]),
    ("schedule.lr_schedule=cos", ["lr_schedule", "cosine"]),
    ("model.depthh=3", ["depthh"]),
])
def test_unknown_or_mistyped_keys_fail_fast_naming_the_key(override, names):
    t0 = time.time()
    r = cli("vgen-train", override)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    for n in names:
        assert n in out, out
    assert time.time() - t0 < 30  # composing fails before MindSpore is even imported


@pytest.mark.parametrize("overrides,key", [
    (["schedule.lr=-1"], "schedule.lr"),
    (["parallel.workers=4", "parallel.sp=3"], "parallel.sp"),
    (["parallel.sp=3", "parallel.workers=3"], "model.num_heads"),
    (["parallel.zero_stage=5"], "parallel.zero_stage"),
    (["parallel.recompute=some"], "parallel.recompute"),
    (["schedule.ema_decay=1.5"], "schedule.ema_decay"),
    (["model.input_size=[4,15,16]"], "model.input_size"),
    (["model=vc2_tiny", "model.head_channels=24"], "model.head_channels"),
    (["model=ms_tiny", "model.input_size=[2,6,8]"], "model.input_size"),
    (["model=ms_tiny", "parallel.sp=2", "parallel.workers=2"], "parallel.sp"),
    (["schedule.val_every=5"], "data.holdout"),  # neither prompts nor held-out samples to validate with
    (["data.holdout=-1"], "data.holdout"),
    (["data.num_samples=4", "data.holdout=4", "schedule.val_every=5"], "data.holdout"),
    (["data.holdout=2", "schedule.val_every=5", "schedule.val_levels=[0.5,1.5]"], "schedule.val_levels"),
    (["distill.enabled=true"], "distill.enabled"),  # OpenSora learns its variance, and embeds no guidance
    (["model=vc2_tiny", "model.lora.rank=4", "distill.enabled=true"], "time_cond_proj_dim"),
    (["model=vc2_tiny", "model.time_cond_proj_dim=16", "distill.enabled=true"], "model.pretrained"),
    (["model=ms_tiny", "model.time_cond_proj_dim=16", "model.lora.rank=4", "distill.enabled=true",
      "distill.target=ema"], "schedule.ema_decay"),
    (["model=ms_tiny", "model.time_cond_proj_dim=16", "model.lora.rank=4", "distill.enabled=true",
      "distill.w_min=0"], "distill.w_min"),
])
def test_impossible_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose(overrides))


def test_impossible_value_fails_on_the_command_line():
    r = cli("vgen-train", "parallel.sp=3", "parallel.workers=3")
    assert r.returncode == 2
    assert "parallel.sp=3" in r.stderr and "num_heads" in r.stderr


def test_print_config_runs_nothing(tmp_path):
    r = cli("vgen-train", "schedule.lr=2e-5", f"runs_root={tmp_path}", "--cfg", "job", check=True)
    cfg = OmegaConf.create(r.stdout)
    assert cfg.schedule.lr == 2e-5 and cfg.model.name == "opensora_stdit_tiny"
    assert not any(tmp_path.iterdir())


def test_recompute_spec():
    assert parse_recompute("none") == ("none", 0)
    assert parse_recompute("first:3") == ("first", 3)
    assert parse_recompute("every:2") == ("every", 2)


def test_run_name_is_stable_and_ignores_neutral_overrides():
    ch = {"model": "opensora_stdit_tiny", "data": "synthetic"}
    a = run_name(ch, ["schedule.lr=2e-5", "schedule.max_steps=10"])
    b = run_name(ch, ["schedule.max_steps=20", "schedule.lr=2e-5", "resume=auto"])
    assert a == b == "opensora_stdit_tiny-synthetic/schedule.lr=2e-5"
    assert run_name(ch, []) == "opensora_stdit_tiny-synthetic/default"
    assert run_name({**ch, "experiment": "opensora/v1_0_stage1"}, ["experiment=opensora/v1_0_stage1"]) \
        == "opensora-v1_0_stage1/default"
    long = run_name(ch, [f"schedule.lr={i}" for i in range(40)])
    assert len(long.split("/")[1]) <= 96


def test_freeze_refuses_another_training_config(tmp_path):
    cfg = compose()
    freeze(cfg, tmp_path)
    cfg2 = compose(["schedule.max_steps=5"])  # neutral: continues the same run
    freeze(cfg2, tmp_path)
    cfg3 = compose(["schedule.lr=1e-2"])
    with pytest.raises(ConfigError, match="schedule.lr"):
        freeze(cfg3, tmp_path)


def test_every_recipe_composes():
    recipes = sorted((REPO / "conf" / "experiment").rglob("*.yaml"))
    for path in recipes:
        name = str(path.relative_to(REPO / "conf" / "experiment").with_suffix(""))
        cfg = compose([f"experiment={name}"])
        validate(cfg)
        assert path.read_text().startswith("# @package _global_"), f"{name} must be a global package"


def test_recompute_per_block_kind():
    from vgen.models.registry import build_family
    from vgen.parallel.recompute import apply_recompute

    family = build_family(compose(["model=hunyuan_tiny"]).model)
    assert apply_recompute(family.blocks_by_kind(), "none", per_kind={"double": "all", "single": "first:1"}) == 3
    assert apply_recompute(family.blocks_by_kind(), "first:1") == 2  # a plain spec: within each kind
    with pytest.raises(ConfigError, match="triple"):
        apply_recompute(family.blocks_by_kind(), "all", per_kind={"triple": "all"})
    with pytest.raises(ConfigError, match=r"parallel\.recompute_kinds\.double"):
        validate(compose(["+parallel.recompute_kinds.double=most"]))
    validate(compose(["model=hunyuan_tiny", "+parallel.recompute_kinds.single=first:1"]))


@pytest.mark.parametrize("override,names", [("+foo=1", ["+foo=1", "foo"]), ("+schedule.lrr=1", ["lrr", "ScheduleConfig"])])
def test_keys_added_with_plus_that_no_schema_has_fail(override, names):
    r = cli("vgen-train", override)
    assert r.returncode == 2
    for n in names:
        assert n in r.stderr, r.stderr


def test_plus_adds_entries_under_dict_fields_only():
    from hydra import compose as hy_compose
    from hydra import initialize_config_module

    from vgen.cli.common import reject_added_keys
    from vgen.config.store import register_configs

    register_configs()
    allowed = ["+parallel.recompute_kinds.block=all", "+model.mask_ratios.mask_new=0.0"]
    with initialize_config_module("vgen.conf", version_base=None):
        cfg = hy_compose("train", overrides=["model=opensora_stdit2_tiny", *allowed, "+model.depthh=3"])
    reject_added_keys(cfg, allowed)
    with pytest.raises(ConfigError, match="model has no key 'depthh'"):
        reject_added_keys(cfg, ["+model.depthh=3"])


def test_recompute_kinds_are_the_familys():
    validate(compose(["model=hunyuan_tiny", "+parallel.recompute_kinds.single=first:1"]))
    with pytest.raises(ConfigError, match=r"recompute_kinds names block kind\(s\) \['triple'\]"):
        validate(compose(["model=hunyuan_tiny", "+parallel.recompute_kinds.triple=all"]))
