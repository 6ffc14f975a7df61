"""Metrics of rank 0: <run>/metrics.jsonl (one JSON object per logged step), <run>/validation.jsonl
(one per validation), TensorBoard events in <run>/tb/ and a tqdm bar. On resume, lines and events after the resumed step are dropped so
the files read as one uninterrupted run."""
import json
import math
from pathlib import Path

from tqdm import tqdm

from .checkpoint import write_text_atomic


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no inf/nan
    return v


def truncate_jsonl(path: Path, last_step: int) -> None:
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                kept.append(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    write_text_atomic(path, "".join(line + "\n" for line in kept))


class MetricsLog:
    def __init__(self, run_dir: Path, start_step: int, max_steps: int, progress: bool = True):
        from tensorboardX import SummaryWriter

        self.path = run_dir / "metrics.jsonl"
        self.val_path = run_dir / "validation.jsonl"
        for path in (self.path, self.val_path):
            truncate_jsonl(path, start_step)
        self.file = open(self.path, "a", buffering=1)
        self.val_file = None  # opened at the first validation
        self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1 if start_step else None)
        self.bar = tqdm(total=max_steps, initial=start_step, dynamic_ncols=True, disable=not progress,
                        unit="step", desc="train")

    def log(self, step: int, metrics: dict) -> None:
        record = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(record) + "\n")
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.tb.add_scalar(f"train/{k}", v, step)

    def validation(self, step: int, measured: dict) -> None:
        """A validation's figures ("val_*"): a line in validation.jsonl, val/* in TensorBoard."""
        if self.val_file is None:
            self.val_file = open(self.val_path, "a", buffering=1)
        self.val_file.write(json.dumps({"step": step, **{k: _clean(v) for k, v in measured.items()}}) + "\n")
        for k, v in measured.items():
            self.tb.add_scalar(f"val/{k[4:]}", v, step)

    def video(self, tag: str, frames, step: int, fps: float = 8) -> None:
        """uint8 [T, H, W, 3] frames as an animated image (TensorBoard's video: a GIF summary)."""
        from tensorboardX.proto.summary_pb2 import Summary

        from ..data.video_writer import gif_bytes

        t, h, w, c = frames.shape
        image = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=gif_bytes(frames, fps))
        self.tb._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def advance(self, loss: float, lr: float, step_time: float) -> None:
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", s_per_step=f"{step_time:.3f}", refresh=False)
        self.bar.update(1)

    def close(self):
        self.bar.close()
        self.tb.close()
        self.file.close()
        if self.val_file is not None:
            self.val_file.close()
