"""This process's place in the job: world = dp x sp, SP groups of consecutive ranks, DP groups
of the ranks with the same position in their SP group."""
from dataclasses import dataclass, field
from typing import Optional

from .comm import Group, make_group


@dataclass
class Mesh:
    rank: int = 0
    size: int = 1
    sp: int = 1
    world: Optional[Group] = field(default=None, repr=False)
    sp_group: Optional[Group] = field(default=None, repr=False)
    dp_group: Optional[Group] = field(default=None, repr=False)

    @property
    def dp(self) -> int:
        return self.size // self.sp

    @property
    def dp_rank(self) -> int:
        return self.rank // self.sp

    @property
    def sp_rank(self) -> int:
        return self.rank % self.sp

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def build_mesh(rank: int, size: int, sp: int) -> Mesh:
    if size % sp:
        raise ValueError(f"world size {size} is not divisible by sp={sp}")
    mesh = Mesh(rank, size, sp)
    mesh.world = Group(None, tuple(range(size)), rank)
    if size > 1:
        k, j = rank // sp, rank % sp
        mesh.sp_group = make_group(f"sp{k}", range(k * sp, (k + 1) * sp), rank, size)
        mesh.dp_group = make_group(f"dp{j}", range(j, size, sp), rank, size)
    else:
        mesh.sp_group = mesh.dp_group = mesh.world
    return mesh
