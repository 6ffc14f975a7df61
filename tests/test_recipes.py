"""Every HunyuanVideo and Step-Video recipe, scaled down: the recipe's model settings, objective,
schedule and parallel plan (ZeRO stage, SP capped at 2, recompute, LoRA) on the family's tiny DiT
and synthetic latents, a few steps with 2 msrun workers. (The DPO recipes train on preference pairs
of real clips: tests/test_dpo.py runs them.)"""
import json
from pathlib import Path

import pytest

from conftest import REPO, compose, read_metrics
from distributed import run_scenarios

pytestmark = [pytest.mark.slow, pytest.mark.dist]
RECIPES = sorted(str(p.relative_to(REPO / "conf" / "experiment").with_suffix(""))
                 for family in ("hunyuan", "stepvideo") for p in (REPO / "conf" / "experiment" / family).glob("*.yaml")
                 if not p.name.startswith("dpo"))
TINY = {"hunyuan": ["model=hunyuan_tiny", "model.depth_double=1", "model.depth_single=1"],
        "stepvideo": ["model=stepvideo_tiny", "model.depth=1", "model.input_size=[3,8,8]"]}
SYNTHETIC = {"kind": "synthetic", "skip_bad": False, "text_dropout": None, "prefetch": 2, "num_samples": 8,
             "latent_size": None, "text_len": None, "min_text_len": 4, "shuffle": True}


def scaled_down(recipe):
    cfg = compose([f"experiment={recipe}"])
    return {"name": recipe.replace("/", "-"), "sp": min(cfg.parallel.sp, 2), "data": SYNTHETIC,
            "overrides": [f"experiment={recipe}", *TINY[recipe.split("/")[0]], "model.pretrained=null",
                          "schedule.max_steps=2",
                          "schedule.batch_size=1", "schedule.warmup_steps=0", "schedule.log_every=1",
                          "schedule.ckpt_every=2", "progress=false"]}


def distinct(scenarios):
    """One scenario per distinct scaled-down run (e.g. Step-Video's 136- and 204-frame fine-tunes
    differ only in the sizes the tiny model replaces); the others point at it."""
    from omegaconf import OmegaConf

    seen, runs, alias = {}, [], {}
    for s in scenarios:
        cfg = compose(s["overrides"])
        key = (s["sp"], OmegaConf.to_yaml({k: v for k, v in cfg.items() if k not in ("data", "experiment")}))
        if key in seen:
            alias[s["name"]] = seen[key]
        else:
            seen[key] = s["name"]
            runs.append(s)
    return runs, alias


SCENARIOS, ALIAS = distinct([scaled_down(r) for r in RECIPES])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    run_scenarios(root, 2, SCENARIOS)
    return root


@pytest.mark.parametrize("recipe", RECIPES)
def test_scaled_down_recipe_trains(runs, recipe):
    name = recipe.replace("/", "-")
    run = runs / ALIAS.get(name, name)
    m = read_metrics(run)
    assert [x["step"] for x in m] == [1, 2] and all(x["loss"] == x["loss"] for x in m)
    state = json.loads((run / "checkpoints" / "step_2" / "trainer_state.json").read_text())
    full = compose([f"experiment={recipe}"])
    assert state["world"]["zero_stage"] == full.parallel.zero_stage
    assert state["world"]["sp"] == min(full.parallel.sp, 2)
