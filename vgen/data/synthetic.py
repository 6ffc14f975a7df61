"""Deterministic in-memory latents and text embeddings shaped by the model's specs.

Sample i is a pure function of (seed, i): low-frequency latent patterns (so a model can learn
them and the loss goes down), text embeddings with a random number of valid tokens, and a caption
of a few words of CAPTION_WORDS (what reward models score frames against)."""
import numpy as np

from ..rng import keyed_rng

CAPTION_WORDS = ("a", "red", "blue", "green", "fox", "cat", "car", "boat", "runs", "jumps", "floats", "drives",
                 "over", "under", "the", "hill", "river", "city", "at", "night")


class SyntheticDataset:
    def __init__(self, num_samples: int, latent_shape, text_len: int, text_dim: int, min_text_len: int = 4,
                 seed: int = 0, pooled_dim: int = 0, pooled_length: int = 0):
        self.num_samples = num_samples
        self.latent_shape = tuple(latent_shape)  # (C, T, H, W)
        self.text_len, self.text_dim, self.pooled_dim = text_len, text_dim, pooled_dim
        # the second encoder's output: a vector, or states of pooled_length tokens
        self.pooled_shape = (pooled_length, pooled_dim) if pooled_length else (pooled_dim,)
        self.min_text_len = max(1, min(min_text_len, text_len))
        self.seed = seed

    def __len__(self):
        return self.num_samples

    def get(self, index: int, rng=None, shape=None) -> dict:
        g = keyed_rng(self.seed, 0, index, "data")
        c, t, h, w = self.latent_shape
        f = 4 if h % 4 == 0 and w % 4 == 0 else 1
        coarse = g.standard_normal((c, t, h // f, w // f), dtype=np.float32)
        latent = np.repeat(np.repeat(coarse, f, axis=2), f, axis=3)
        n_valid = int(g.integers(self.min_text_len, self.text_len + 1))
        text = np.zeros((self.text_len, self.text_dim), np.float32)
        text[:n_valid] = g.standard_normal((n_valid, self.text_dim), dtype=np.float32)
        mask = (np.arange(self.text_len) < n_valid).astype(np.uint8)
        sample = {"latent": latent, "text_emb": text, "text_mask": mask}
        if self.pooled_dim:
            sample["text_pooled"] = g.standard_normal(self.pooled_shape, dtype=np.float32)
        sample["caption"] = " ".join(g.choice(CAPTION_WORDS, int(g.integers(3, 8))))  # drawn last: the rest stays
        return sample

    def empty_text(self) -> dict:
        """The 'empty prompt' of this data set: one valid token, fixed by the seed."""
        g = keyed_rng(self.seed, 0, -1 & 0x7FFFFFFF, "data")
        text = np.zeros((self.text_len, self.text_dim), np.float32)
        text[0] = g.standard_normal(self.text_dim, dtype=np.float32)
        out = {"text_emb": text, "text_mask": (np.arange(self.text_len) < 1).astype(np.uint8)}
        if self.pooled_dim:
            out["text_pooled"] = g.standard_normal(self.pooled_shape, dtype=np.float32)
        return out
