"""The README's main job on a small set: real clips decoded, bucketed, encoded online by the tiny
VAE and text encoder, training a tiny STDiT2 with frame masks; and exact resume with buckets."""
import subprocess
import sys

import pytest

from conftest import REPO, compose, read_metrics
from vgen.train.trainer import Trainer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    subprocess.run([sys.executable, str(REPO / "tools" / "make_quickstart_data.py"), "--out", str(out), "--num", "12",
                    "--images", "4"], check=True, capture_output=True)
    return out


def quickstart(clips, run, steps):
    # PyNative: every bucket shape would otherwise compile its own step (the recipe itself uses jit)
    cfg = compose(["experiment=quickstart", f"data.csv_path={clips / 'train.csv'}",
                   f"model.text_encoder.tokenizer={clips / 'tokenizer.json'}", f"schedule.max_steps={steps}",
                   "schedule.ckpt_every=2", "schedule.log_every=1", "progress=false", "jit=false"])
    run.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, run).setup()
    trainer.run()
    return trainer


def test_quickstart_trains_from_videos_and_resumes_exactly_with_buckets(clips, tmp_path):
    straight = quickstart(clips, tmp_path / "straight", 4)
    metrics = read_metrics(tmp_path / "straight")
    assert [m["step"] for m in metrics] == list(range(1, 5))
    assert {m["bucket"] for m in metrics} <= {"8x64x64", "8x48x80", "8x80x48", "1x64x64", "1x48x80", "1x80x48"}
    assert straight.data.encoders is not None and straight.data.encoders.vae is not None
    quickstart(clips, tmp_path / "split", 2)
    quickstart(clips, tmp_path / "split", 4)  # resumes at step 2 inside the epoch bucket plan
    a = {m["step"]: (m["loss"], m["bucket"]) for m in read_metrics(tmp_path / "split")}
    b = {m["step"]: (m["loss"], m["bucket"]) for m in metrics}
    assert a == b
