"""Preflight (vgen/config/preflight.py): a training config whose inputs are unset or unreadable ends
vgen-train in seconds with one message naming every key and its fix, before any worker starts or
any weight is allocated, with the memory plan and whether it fits, and leaves no run directory behind."""
import time

import pytest

from conftest import cli, compose
from vgen.config.preflight import preflight
from vgen.config.validate import ConfigError


def test_the_headline_command_without_data_ends_in_seconds_naming_what_is_missing(tmp_path):
    t0 = time.time()
    r = cli("vgen-train", "model=hunyuan", "data=webvid", "parallel=sp8", f"runs_root={tmp_path}")
    took = time.time() - t0
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    for key in ("data.csv_path is not set", "model.vae.path", "model.text_encoder.path", "model.text_encoder.tokenizer",
                "model.text_encoder_2.path", "memory plan per rank"):
        assert key in out, out
    assert "Traceback" not in out and not any(tmp_path.iterdir())  # nothing frozen, no worker started
    assert took < 60, took


def test_every_unreadable_input_is_named_with_its_value(tmp_path):
    cfg = compose(["data=video", f"data.csv_path={tmp_path / 'clips.csv'}", f"data.root={tmp_path / 'videos'}",
                   f"model.pretrained={tmp_path / 'stdit.safetensors'}", "data.latents=cache", "data.text=cache",
                   f"data.cache_dir={tmp_path}"])
    with pytest.raises(ConfigError) as e:
        preflight(cfg)
    msg = str(e.value)
    assert f"data.csv_path={tmp_path / 'clips.csv'}: no such file" in msg
    assert f"data.root={tmp_path / 'videos'}: no such dir" in msg
    assert f"model.pretrained={tmp_path / 'stdit.safetensors'}: no such path" in msg
    assert "data.cache_dir" not in msg  # it exists
    assert "(3 problems)" in msg


def test_a_complete_config_passes(tmp_path):
    preflight(compose([]))  # synthetic data, tiny model: nothing to read
    (tmp_path / "clips.csv").write_text("video,caption\n")
    preflight(compose(["data=video", f"data.csv_path={tmp_path / 'clips.csv'}", "data.latents=cache",
                       "data.text=cache", f"data.cache_dir={tmp_path}"]))


def test_rewards_need_their_weights_and_tokenizers():
    cfg = compose(["model=vc2_tiny", "model.time_cond_proj_dim=16", "model.lora.rank=4", "distill.enabled=true",
                   "distill.image_reward.model=hpsv2.1", "distill.video_reward.model=internvideo2-s2-tiny"])
    with pytest.raises(ConfigError) as e:
        preflight(cfg)
    msg = str(e.value)
    assert "distill.image_reward.path is not set" in msg and "distill.image_reward.tokenizer is not set" in msg
    assert "distill.video_reward.path" not in msg  # a tiny model starts from its seed
    assert "distill.video_reward.tokenizer is not set" in msg
