"""parallelize(): every parallel technique applied onto an unchanged model, from what its family
declares (FamilySpec.sp, .blocks), in one fixed order:

  1. sequence parallelism: every SplitSeam / GatherSeam of the net becomes the cell that splits /
     gathers along its axis over the SP group, and the attention cores the SP plan names are
     wrapped in Ulysses all-to-alls;
  2. recompute on the family's blocks (per kind of block);
  3. ZeRO-3: every shardable layer's parameters replaced by this rank's segment;
  4. the gradient synchronisation (DP all-reduce, or the ZeRO reduce-scatter) for the train step.

A setting the model cannot honour is an error, never dropped."""
import fnmatch
import logging
from dataclasses import dataclass
from typing import Dict, List, Set

from mindspore import nn

from ..config.validate import ConfigError
from ..models.layers.paths import cells_with_paths, replace_cell
from ..models.layers.seams import GatherSeam, SplitSeam
from .recompute import apply_recompute
from .sequence import JointUlyssesAttention, SequenceGather, SequenceSplit, UlyssesAttention
from .sync import GradSync
from .zero import install_gathers, shardable_names

log = logging.getLogger("vgen")


@dataclass
class Parallelized:
    sync: GradSync  # the gradient synchronisation of the flat buckets
    sharded: Set[int]  # ids of the ZeRO-3 sharded parameters
    blocks: List[nn.Cell]  # the family's blocks (bucket units), in order
    recomputed: int  # how many of them are recomputed


def apply_sequence_parallel(net: nn.Cell, plan, group, text_len_of) -> int:
    """Seams -> split / gather cells; the plan's cores -> Ulysses. Returns the cores wrapped."""
    cells = cells_with_paths(net)
    for path, cell in cells:
        if isinstance(cell, SplitSeam):
            replace_cell(net, path, SequenceSplit(group, cell.axis))
        elif isinstance(cell, GatherSeam):
            replace_cell(net, path, SequenceGather(group, cell.axis, cell.ndim))
    wrapped = 0
    for core in plan.cores:
        hits = [(path, cell) for path, cell in cells if fnmatch.fnmatchcase(path, core.pattern)]
        if not hits:
            raise ValueError(f"SP plan: no attention core matches {core.pattern!r}")
        for path, cell in hits:
            if core.kind == "ulysses":
                replace_cell(net, path, UlyssesAttention(cell, group))
            elif core.kind == "joint":
                replace_cell(net, path, JointUlyssesAttention(cell, group, text_len_of(core.text_len_attr)))
            else:
                raise ValueError(f"SP plan: unknown core kind {core.kind!r} (ulysses | joint)")
            wrapped += 1
    return wrapped


def sharded_names(family, mesh, parallel) -> Set[str]:
    """The parameters ZeRO-3 will shard: decided before the weights are filled, so that every rank
    reads and keeps only its segments of them."""
    return shardable_names(family.net) if parallel.zero_stage == 3 and mesh.size > 1 else set()


def parallelize(family, mesh, parallel, shapes: Dict[str, tuple], sharded: Set[str]) -> Parallelized:
    """Applies SP, recompute and ZeRO-3 to family.net (in place) as `parallel` (the config group)
    asks; `shapes` are the parameters' full shapes, `sharded` the names (sharded_names) whose
    parameters hold their local segments."""
    net, spec = family.net, family.spec
    if mesh.sp > 1:
        if spec.sp is None:
            raise ConfigError(f"parallel.sp={mesh.sp}: model family {spec.name}: {spec.sp_missing}")
        apply_sequence_parallel(net, spec.sp, mesh.sp_group, lambda attr: int(getattr(net, attr)))
    sync = GradSync(mesh, parallel.zero_stage)
    kinds = family.blocks_by_kind()
    blocks = [b for members in kinds.values() for b in members]
    recomputed = apply_recompute(kinds, parallel.recompute, keep_attention=not parallel.recompute_attention,
                                 per_kind=parallel.recompute_kinds)
    sharded = install_gathers(net, mesh, shapes, sharded) if sync.zero_stage == 3 else set()
    if mesh.is_main and (recomputed or sync.zero_stage):
        log.info("ZeRO stage %d over %d ranks, recompute on %d/%d blocks", sync.zero_stage, sync.shards, recomputed,
                 len(blocks))
        if sync.zero_stage == 3 and recomputed < len(blocks):
            log.info("ZeRO-3: %d blocks run without recompute and keep their gathered weights until their backward "
                     "(parallel.recompute=all gathers them again instead)", len(blocks) - recomputed)
    return Parallelized(sync, sharded, blocks, recomputed)
