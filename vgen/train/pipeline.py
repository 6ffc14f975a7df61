"""The data pipeline of a run: one object from the data set to the loss cell's named inputs.

    samples in the step's bucket (prefetch thread)  ->  every random draw of the step, keyed
    (batches.py)  ->  online encoding where the run encodes online (the frozen VAE / text
    encoders, compiled, main thread)  ->  the family's host-side fields  ->  {field: Tensor}

so the trainer sees batches whose latents and text are already encoded, cached or not."""
from mindspore import Tensor

from ..data.loader import Prefetcher
from .batches import MicroBatch, StepBatchBuilder
from .datasets import build_data
from .encoding import OnlineEncoders


class DataPipeline:
    def __init__(self, cfg, family, dp: int, dp_rank: int):
        self.family = family
        self.dataset, self.sampler = build_data(cfg, family, dp)
        video = cfg.data.kind == "video"
        online_vae = video and cfg.data.latents == "online" and family.input_kind == "latent"
        online_text = video and cfg.data.text == "online" and family.text.dim > 0
        # seed 0: the tiny encoders' weights are the ones vgen-cache used (its manifests say seed0)
        self.encoders = (OnlineEncoders(cfg.model, family.latent, vae=online_vae, text=online_text, seed=0,
                                        jit=cfg.jit) if (online_vae or online_text) else None)
        dropout = cfg.data.text_dropout if cfg.data.text_dropout is not None else family.text.dropout
        self.batches = StepBatchBuilder(self.dataset, family, self.sampler, seed=cfg.seed, dp_rank=dp_rank,
                                        text_dropout=dropout, skip_bad=cfg.data.skip_bad)
        self.depth = cfg.data.prefetch
        self.prefetcher = None

    # ---- checkpointed state: the sampler's position ----------------------------------------

    def state_dict(self, step: int) -> dict:
        return self.sampler.state_dict(step)

    def load_state_dict(self, state) -> None:
        if state and hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(state)  # continue the same epoch plan exactly

    # ---- batches --------------------------------------------------------------------------------

    def start(self, first: int, stop: int) -> None:
        self.prefetcher = Prefetcher(self.batches.build, first, stop, self.depth)

    def get(self, step: int):
        return self.prefetcher.get(step)

    @property
    def waited_s(self) -> float:
        return self.prefetcher.waited_s

    def close(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.close()

    def inputs(self, micro: MicroBatch) -> dict:
        """The loss cell's named inputs of a micro-batch, as Tensors."""
        return {k: Tensor(a) for k, a in named_inputs(self.family, micro.batch, self.encoders).items()}


def named_inputs(family, batch: dict, encoders=None) -> dict:
    """A built batch -> the loss cell's named inputs (numpy): online encoding where the run has
    it, then the family's host-side fields."""
    if encoders is not None:
        batch = encoders(batch)
    if family.prepare is not None:
        batch.update(family.prepare(batch))
    if hasattr(family.objective, "prepare"):  # e.g. a distillation's reward text features
        batch.update(family.objective.prepare(batch))
    return family.model_inputs(batch)
