"""Keyed random draws. Every random number of a training step (timesteps, noise, caption
dropout, latent sampling, frame masks) comes from a generator keyed by (seed, step, global sample
index, stream): the same numbers whatever the worker count, and an exact resume needs no RNG state.
The global sample index is the sample's position in the step's global batch. Streams are the
core ones below plus those the families declare (FamilySpec.streams), each with a fixed id."""
from functools import lru_cache

import numpy as np

CORE_STREAMS = {"timestep": 1, "noise": 2, "text_drop": 3, "latent": 4, "frames": 5, "data": 7, "vae_noise": 8,
                "vae_noise_rejected": 9, "sampler_noise": 10,  # sampler_noise: ancestral sampling's fresh noise
                "guidance": 11,  # the guidance scale a consistency distillation draws per sample
                "reward": 12}  # which decoded frames (and samples, crops) a reward scores
VALIDATION_STEP = 2 ** 31 - 1  # the step key of validation's draws: no training step reaches it


@lru_cache(maxsize=1)
def streams() -> dict:
    """{stream name: id} of the core streams and every family's; an id or name taken twice is an error."""
    from .models.registry import family_specs

    table = dict(CORE_STREAMS)
    for spec in family_specs().values():
        for name, sid in spec.streams.items():
            if table.get(name, sid) != sid or (sid in table.values() and table.get(name) != sid):
                raise ValueError(f"family {spec.name}: random stream {name!r} = {sid} clashes with {table}")
            table[name] = sid
    return table


def keyed_rng(seed: int, step: int, index: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, step, index, streams()[stream]])


def sample_rngs(seed: int, step: int, indices, names):
    """{stream: [generator per sample]} for the samples at `indices` of step `step`."""
    return {s: [keyed_rng(seed, step, int(i), s) for i in indices] for s in names}
