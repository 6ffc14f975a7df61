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


def _contains_attention(cell: nn.Cell) -> bool:
    return any(isinstance(c, AttentionCore) for _, c in cell.cells_and_names())


def _recompute_except_attention(cell: nn.Cell) -> None:
    """Recompute every sub-cell that holds no attention core; the cores' outputs are stored."""
    if not _contains_attention(cell):
        cell.recompute()
        return
    for child in cell.cells():
        _recompute_except_attention(child)


def apply_recompute(blocks: List[nn.Cell], spec: str, keep_attention: bool = False) -> int:
    """Marks the selected blocks for recompute; returns how many. With keep_attention, the
    attention cores (and the block's own element-wise glue) keep their outputs."""
    chosen = selected(blocks, spec)
    for block in chosen:
        if keep_attention:
            _recompute_except_attention(block)
        else:
            block.recompute()
    return len(chosen)
