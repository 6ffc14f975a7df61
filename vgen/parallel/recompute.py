"""Recompute (activation checkpointing) on a family's blocks: none | all | first:<N> | every:<n>,
within each kind of block when a family has several (HunyuanVideo: double / single, with
`+parallel.recompute_kinds.single=first:20` to differ per kind),
optionally keeping the attention cores out (their outputs are stored, not recomputed)."""
from typing import Dict, List

from mindspore import nn

from ..config.validate import ConfigError, parse_recompute
from ..models.layers.attention import AttentionCore


def selected(blocks: List[nn.Cell], kind: str, n: int) -> List[nn.Cell]:
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


def apply_recompute(blocks, spec: str, keep_attention: bool = False, per_kind=None) -> int:
    """Marks the selected blocks for recompute; returns how many. `blocks` is a list, or a dict of
    lists by block kind: `spec` then applies within each kind, `per_kind` {kind: spec} overrides it.
    With keep_attention, the attention cores (and the block's own element-wise glue) keep their
    outputs."""
    groups: Dict = blocks if isinstance(blocks, dict) else {None: list(blocks)}
    per_kind = dict(per_kind or {})
    unknown = sorted(set(per_kind) - set(groups))
    if unknown:
        raise ConfigError(f"parallel.recompute_kinds names block kind(s) {unknown}; this model has "
                          f"{sorted(k for k in groups if k)}")
    chosen = []
    for name, members in groups.items():
        chosen += selected(members, *parse_recompute(per_kind.get(name, spec)))
    for block in chosen:
        if keep_attention:
            _recompute_except_attention(block)
        else:
            block.recompute()
    return len(chosen)
