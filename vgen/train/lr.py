"""Learning rate per optimizer update: linear warmup, then constant or cosine decay."""
import math


def lr_at(update: int, lr: float, warmup_steps: int, schedule: str, decay_steps: int, min_lr: float = 0.0) -> float:
    """LR of the update that produces step `update + 1` (update counts from 0)."""
    if warmup_steps > 0 and update < warmup_steps:
        return lr * (update + 1) / warmup_steps
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        span = max(1, decay_steps - warmup_steps)
        progress = min(1.0, max(0.0, (update - warmup_steps) / span))
        return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule.lr_schedule {schedule!r}")
