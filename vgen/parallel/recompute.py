"""Recompute (activation checkpointing) on a family's blocks: none | all | first:<N> | every:<n>,
optionally keeping the attention cores out (their outputs are stored, not recomputed)."""
from typing import List

from mindspore import nn

from ..config.validate import parse_recompute
from ..models.layers.attention import AttentionCore


def selected(blocks: List[nn.Cell], spec: str) -> List[nn.Cell]:
    kind, n = parse_recompute(spec)
    if kind == "none":
        return []
    if kind == "all":
        return list(blocks)
    if kind == "first":
        return list(blocks[:n])
    return [b for i, b in enumerate(blocks) if i % max(1, n) == 0]  # every:n


def apply_recompute(blocks: List[nn.Cell], spec: str, keep_attention: bool = False) -> int:
    """Marks the selected blocks for recompute; returns how many."""
    chosen = selected(blocks, spec)
    for block in chosen:
        block.recompute()
        if keep_attention:
            for _, cell in block.cells_and_names():
                if isinstance(cell, AttentionCore):
                    cell.recompute(False)
    return len(chosen)
