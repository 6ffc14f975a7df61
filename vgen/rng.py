"""Keyed random draws. Every random number of a training step (timesteps, noise, caption
dropout, latent sampling, frame masks) comes from a generator keyed by (seed, step, global sample
index, stream): the same numbers whatever the worker count, and an exact resume needs no RNG state.
The global sample index is the sample's position in the step's global batch."""
import numpy as np

STREAMS = {"timestep": 1, "noise": 2, "text_drop": 3, "latent": 4, "frames": 5, "frame_mask": 6, "data": 7,
           "vae_noise": 8}


def keyed_rng(seed: int, step: int, index: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, step, index, STREAMS[stream]])


def sample_rngs(seed: int, step: int, indices, streams):
    """{stream: [generator per sample]} for the samples at `indices` of step `step`."""
    return {s: [keyed_rng(seed, step, int(i), s) for i in indices] for s in streams}
