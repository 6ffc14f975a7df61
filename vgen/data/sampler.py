"""Which samples make up each step's global batch.

A step's global batch has batch_size x dp x grad_accum samples; its position j (the global
sample index that keys every random draw) maps to rank r = (j // batch_size) % dp and micro-step
m = j // (batch_size x dp). Epoch e visits the data set in the order of a permutation keyed by
(seed, e); the remainder that does not fill a global batch is dropped."""
import numpy as np

from .errors import DataError


class GlobalBatchSampler:
    def __init__(self, num_samples: int, batch_size: int, dp: int, accum: int, seed: int, shuffle: bool = True):
        self.num_samples = num_samples
        self.batch_size, self.dp, self.accum = batch_size, dp, accum
        self.global_batch = batch_size * dp * accum
        self.seed, self.shuffle = seed, shuffle
        self.steps_per_epoch = num_samples // self.global_batch
        if self.steps_per_epoch == 0:
            raise DataError(f"the data set has {num_samples} samples, fewer than one global batch "
                            f"(schedule.batch_size={batch_size} x dp={dp} x schedule.grad_accum={accum} = "
                            f"{self.global_batch}); lower the batch size or add data")
        self._perm_epoch, self._perm = None, None

    def order(self, epoch: int) -> np.ndarray:
        if self._perm_epoch != epoch:
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, 0x5A])
            self._perm = rng.permutation(self.num_samples) if self.shuffle else np.arange(self.num_samples)
            self._perm_epoch = epoch
        return self._perm

    def micro_positions(self, dp_rank: int, micro: int, step: int = None) -> np.ndarray:
        """Global sample indices of (rank, micro-step) within a step (the same for every step)."""
        start = micro * self.batch_size * self.dp + dp_rank * self.batch_size
        return np.arange(start, start + self.batch_size)

    def dataset_index(self, step: int, position: int, shift: int = 0) -> int:
        """The data-set index at `position` of step `step` (shift > 0 walks on past bad samples)."""
        epoch, k = divmod(step, self.steps_per_epoch)
        order = self.order(epoch)
        return int(order[(k * self.global_batch + position + shift * self.global_batch) % self.num_samples])

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def first_step_of(self, epoch: int) -> int:
        return epoch * self.steps_per_epoch

    def global_batch_of(self, step: int) -> int:
        return self.global_batch

    def state_dict(self, step: int) -> dict:
        return {"kind": "global", "next_step": step, "epoch": self.epoch_of(step),
                "steps_per_epoch": self.steps_per_epoch, "global_batch": self.global_batch}
