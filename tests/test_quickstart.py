"""The README's main job on a small set: real clips decoded, bucketed, encoded online by the tiny
VAE and text encoder, training a tiny STDiT2 with frame masks; exact resume with buckets; and
validation videos (EMA weights) that leave the training exactly as it was."""
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def quickstart(clips, run, steps, *more):
    # PyNative: every bucket shape would otherwise compile its own step (the recipe itself uses jit)
    cfg = compose(["experiment=quickstart", f"data.csv_path={clips / 'train.csv'}",
                   f"model.text_encoder.tokenizer={clips / 'tokenizer.json'}", f"schedule.max_steps={steps}",
                   "schedule.ckpt_every=2", "schedule.log_every=1", "progress=false", "jit=false", *more])
    run.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, run).setup()
    trainer.run()
    return trainer


def test_quickstart_trains_from_videos_and_resumes_exactly_with_buckets(clips, tmp_path):
    straight = quickstart(clips, tmp_path / "straight", 4, *HELD_OUT)  # the validation loss only
    metrics = read_metrics(tmp_path / "straight")
    assert straight.data.sampler.num_samples == len(straight.data.dataset) - 2  # held out of training
    assert [m["step"] for m in metrics] == list(range(1, 5))
    assert {m["bucket"] for m in metrics} <= {"8x64x64", "8x48x80", "8x80x48", "1x64x64", "1x48x80", "1x80x48"}
    assert straight.data.encoders is not None and straight.data.encoders.vae is not None
    # the split run also samples validation videos every 2 steps: with its EMA weights swapped in
    # and out, the training goes on exactly as the straight run's
    split = tmp_path / "split"
    quickstart(clips, split, 2, *HELD_OUT, *VALIDATION)
    quickstart(clips, split, 4, *HELD_OUT, *VALIDATION)  # resumes at step 2 inside the epoch bucket plan
    a = {m["step"]: (m["loss"], m["bucket"]) for m in read_metrics(split)}
    b = {m["step"]: (m["loss"], m["bucket"]) for m in metrics}
    assert a == b
    # the held-out loss of the resumed run (and one with videos) is the uninterrupted run's
    val = {m["step"]: m for m in read_metrics(split, "validation.jsonl")}
    want = {m["step"]: m for m in read_metrics(tmp_path / "straight", "validation.jsonl")}
    assert sorted(val) == sorted(want) == [2, 4] and val[2]["val_loss"] != val[4]["val_loss"]
    assert all(np.isfinite(m["val_loss"]) for m in want.values())
    for step in (2, 4):
        for key in ("val_loss", "val_loss_0.10", "val_loss_0.90"):
            np.testing.assert_allclose(val[step][key], want[step][key], rtol=1e-6)
    for step in (2, 4):
        folder = split / "samples" / f"step_{step}"
        assert sorted(p.name for p in folder.iterdir()) == [
            "0000-a_red_circle_moving_left_on_a_black_background-seed5.json",
            "0000-a_red_circle_moving_left_on_a_black_background-seed5.mp4"]
    gifs = [(tag, step) for tag, step, data in tb_images(split / "tb") if data[:6] == b"GIF89a"]
    assert sorted(gifs) == [("val/0000", 2), ("val/0000", 4)]


HELD_OUT = ["data.holdout=2", "schedule.val_every=2"]
VALIDATION = ["schedule.val_every=2", 'sample.prompts=["a red circle moving left on a black background"]',
              "sample.steps=2", "sample.seed=5", "sample.num_frames=8", "sample.resolution=[64,64]"]


def tb_images(folder: Path):
    """(tag, step, encoded bytes) of every image summary in the TensorBoard event files."""
    from tensorboardX.proto.event_pb2 import Event

    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):  # TFRecords: length, its crc, the record, its crc
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                if v.HasField("image"):
                    yield v.tag, event.step, v.image.encoded_image_string
