"""Cells by dotted module path ("blocks.3.attn.core"): finding and replacing them in a net."""
from typing import List, Tuple

from mindspore import nn


def cells_with_paths(net: nn.Cell) -> List[Tuple[str, nn.Cell]]:
    return [(path, cell) for path, cell in net.cells_and_names() if path]


def parent_and_key(net: nn.Cell, path: str) -> Tuple[nn.Cell, str]:
    parent = net
    *head, key = path.split(".")
    for part in head:
        parent = parent[int(part)] if isinstance(parent, (nn.CellList, nn.SequentialCell)) else getattr(parent, part)
    return parent, key


def replace_cell(net: nn.Cell, path: str, new: nn.Cell) -> None:
    """Put `new` at `path` (an attribute, or an index of a CellList / SequentialCell). Re-parenting
    renames Parameters to their path below the parent only; names must be the full, unique paths
    in a compiled graph, so they are set again."""
    parent, key = parent_and_key(net, path)
    if isinstance(parent, (nn.CellList, nn.SequentialCell)):
        parent[int(key)] = new
    else:
        setattr(parent, key, new)
    for relative, p in new.parameters_and_names():
        p.name = f"{path}.{relative}"


def cell_at(net: nn.Cell, path: str) -> nn.Cell:
    parent, key = parent_and_key(net, path)
    return parent[int(key)] if isinstance(parent, (nn.CellList, nn.SequentialCell)) else getattr(parent, key)
