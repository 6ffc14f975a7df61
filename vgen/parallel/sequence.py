"""Ulysses sequence parallelism: tokens are split across the SP group; around an attention core
an all-to-all trades the sequence split for a head split (each rank attends over the whole
sequence for its heads) and back. Lengths that do not divide are zero-padded and the padding is
masked out of attention and dropped at the output. Families place SequenceSplit / SequenceGather
at their split points and wrap the attention cores that need the whole sequence (their SP plan)."""
import mindspore as ms
from mindspore import nn, ops

from .comm import AllGather, AllToAll, Group, move_from_front, move_to_front


def _pad_to(x, axis: int, length: int):
    pad = length - x.shape[axis]
    if pad == 0:
        return x
    shape = x.shape[:axis] + (pad,) + x.shape[axis + 1:]
    return ops.cat([x, ops.zeros(shape, x.dtype)], axis)


class SequenceSplit(nn.Cell):
    """This rank's chunk of dim `axis`, after padding it to a multiple of the group size."""

    def __init__(self, group: Group, axis: int):
        super().__init__()
        self.n, self.rank, self.axis = group.size, group.rank, axis

    def chunk(self, length: int) -> int:
        return -(-length // self.n)

    def construct(self, x):
        c = self.chunk(x.shape[self.axis])
        return ops.narrow(_pad_to(x, self.axis, c * self.n), self.axis, self.rank * c, c)

    def valid(self, length: int, dtype):
        """1 for this rank's real positions, 0 for padding ([chunk])."""
        c = self.chunk(length)
        if c * self.n == length:
            return ops.ones((c,), dtype)
        return ops.narrow(_pad_to(ops.ones((length,), dtype), 0, c * self.n), 0, self.rank * c, c)


class SequenceGather(nn.Cell):
    """Every rank's chunk of dim `axis` of an `ndim`-dim tensor, concatenated, without the padding."""

    def __init__(self, group: Group, axis: int, ndim: int = 4):
        super().__init__()
        self.axis = axis
        self.gather = AllGather(group)
        self.to_front = move_to_front(axis, ndim)  # the collective gathers dim 0
        self.from_front = move_from_front(axis, ndim)

    def construct(self, x, length: int):
        full = self.gather(x.transpose(self.to_front)).transpose(self.from_front)
        return ops.narrow(full, self.axis, 0, length)


class UlyssesAttention(nn.Cell):
    """[B, H, N/sp, D] per rank -> all-to-all -> [B, H/sp, N, D] -> the wrapped core -> back."""

    def __init__(self, core: nn.Cell, group: Group):
        super().__init__()
        self.core = core
        self.to_heads = AllToAll(group, split_dim=1, concat_dim=2)
        self.to_sequence = AllToAll(group, split_dim=2, concat_dim=1)
        self.gather_mask = AllGather(group)

    def construct(self, q, k, v, key_mask=None):
        q, k, v = self.to_heads(q), self.to_heads(k), self.to_heads(v)
        if key_mask is not None:  # [B, N/sp] -> [B, N] (as float: CPU collectives are float-only)
            key_mask = self.gather_mask(key_mask.astype(ms.float32).swapaxes(0, 1)).swapaxes(0, 1)
        return self.to_sequence(self.core(q, k, v, key_mask))


class JointUlyssesAttention(nn.Cell):
    """Ulysses for joint [image, text] attention (HunyuanVideo): the image tokens (all but the last
    `text_len`) are split across the group and trade that split for a head split; the text tokens
    are whole on every rank, which keeps its own heads of them. After the core, image outputs go
    back to the sequence split and text outputs are gathered over heads."""

    def __init__(self, core: nn.Cell, group: Group, text_len: int):
        super().__init__()
        self.core, self.text_len = core, text_len
        self.n, self.rank = group.size, group.rank
        self.to_heads = AllToAll(group, split_dim=1, concat_dim=2)
        self.to_sequence = AllToAll(group, split_dim=2, concat_dim=1)
        self.gather = AllGather(group)

    def _split(self, x, n_img: int):
        hs = x.shape[1] // self.n
        return ops.cat((self.to_heads(x[:, :, :n_img]), x[:, self.rank * hs:(self.rank + 1) * hs, n_img:]), 2)

    def construct(self, q, k, v, key_mask=None):
        n_img = q.shape[2] - self.text_len
        q, k, v = self._split(q, n_img), self._split(k, n_img), self._split(v, n_img)
        if key_mask is not None:  # gather the image part: [B, n_img] -> [B, n_img * sp]
            img_mask = self.gather(key_mask[:, :n_img].astype(ms.float32).swapaxes(0, 1)).swapaxes(0, 1)
            key_mask = ops.cat((img_mask, key_mask[:, n_img:].astype(ms.float32)), 1)
        out = self.core(q, k, v, key_mask)
        n_all = n_img * self.n
        img = self.to_sequence(out[:, :, :n_all])
        txt = self.gather(out[:, :, n_all:].swapaxes(0, 1)).swapaxes(0, 1)  # heads back together
        return ops.cat((img, txt), 2)
