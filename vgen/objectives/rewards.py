"""Reward feedback on a consistency student (T2V-Turbo's mixed reward, train_t2v_turbo_v1_lora.py):
the student's prediction f(x_s, s) (its clean-latent estimate) is decoded by the frozen VAE on a few
frames and scored against the caption by a frozen reward model; the loss term is -scale * mean score,
and its gradient reaches the student through the decoder and the reward model.

Which frames, as the official code picks them (drawn per micro-batch from the generator of its
first sample, stream "reward"):
  image  `samples` random samples of the batch (randperm(bsz)[:1]) and `frames` random frames of
         each (randperm(n_frames)[:5]), scored one by one (HPSv2.1, x1.0)
  video  every sample; `frames` frames at stride t // frames from a random start < stride
         (InternVideo2-S2 on 8 frames, x2.0)

The host side (`FrameReward`) draws the indices, gives each caption's text features (the reward's
text tower, no gradient) and the preprocessing's resize matrices as batch fields; the in-graph
`FrameRewardTerm` decodes (the decoder's blocks recomputed, so their activations are not kept for
the backward pass) and scores."""
import numpy as np
from mindspore import nn, ops

IMAGE, VIDEO = "image", "video"


class FrameReward:
    """The host side of one reward term (`kind` image or video)."""

    streams = ("reward",)

    def __init__(self, kind: str, score, text_features, matrices, latent_spec, scale: float, frames: int,
                 samples: int = 1):
        """`score`: the reward's score Cell (frames, text features, rows, cols) -> [N];
        `text_features(captions)` -> [B, D] numpy; `matrices(height, width, rng)` -> (rows, cols) of
        the reward's resize (and crop)."""
        if kind not in (IMAGE, VIDEO):
            raise ValueError(f"reward kind {kind!r}: image or video")
        self.kind, self.score, self.text_features, self.matrices = kind, score, text_features, matrices
        self.latent_spec, self.scale, self.frames, self.samples = latent_spec, float(scale), int(frames), int(samples)
        self.fields = tuple(self._key(k) for k in ("samples", "frames", "text", "rows", "cols"))

    def _key(self, name: str) -> str:
        return f"{self.kind}_reward_{name}"

    def draw(self, rngs, latent_shape) -> dict:
        rng = rngs["reward"][0]  # one choice per micro-batch, keyed by its first sample
        batch, t = len(rngs["reward"]), latent_shape[1]
        if self.kind == IMAGE:
            if self.frames > t or self.samples > batch:
                raise ValueError(f"image reward on {self.frames} frames of {self.samples} samples: the micro-batch "
                                 f"has {batch} samples of {t} latent frames")
            samples = rng.permutation(batch)[:self.samples]
            frames = rng.permutation(t)[:self.frames]
        else:
            if t <= self.frames:
                raise ValueError(f"video reward on {self.frames} frames: the clips have {t} latent frames, it needs "
                                 "more (the official code asserts t > frames)")
            stride = t // self.frames
            samples = np.arange(batch)
            frames = np.arange(int(rng.integers(0, stride)), t, stride)[:self.frames]
        h, w = latent_shape[2] * self.latent_spec.compression[1], latent_shape[3] * self.latent_spec.compression[2]
        rows, cols = self.matrices(h, w, rng)
        return {self._key("samples"): samples.astype(np.int32), self._key("frames"): frames.astype(np.int32),
                self._key("rows"): rows, self._key("cols"): cols}

    def prepare(self, batch) -> dict:
        """The captions' text features (every sample's: the draw picks among them in the graph)."""
        if "caption" not in batch:
            raise ValueError(f"the {self.kind} reward scores frames against their captions; this data gives "
                             "no captions (use data=video or data.kind=cached with a caption column)")
        return {self._key("text"): np.asarray(self.text_features(list(batch["caption"])), np.float32)}

    def term(self, decoder) -> "FrameRewardTerm":
        return FrameRewardTerm(self.kind, self.fields, self.score, decoder, self.latent_spec.scale,
                               self.latent_spec.shift, self.scale)


class FrameRewardTerm(nn.Cell):
    """-scale * mean reward of the decoded chosen frames of `pred` [B, C, T, h, w] (model latents);
    `keys`: the batch fields of the samples, frames, text features and resize matrices."""

    def __init__(self, kind: str, keys, score, decoder, latent_scale: float, latent_shift: float, scale: float):
        super().__init__()
        self.kind, self.keys, self.score, self.decoder = kind, tuple(keys), score, decoder
        self.latent_scale, self.latent_shift, self.scale = float(latent_scale), float(latent_shift), float(scale)

    def construct(self, pred, batch):
        samples, frames, text, rows, cols = (batch[k] for k in self.keys)
        z = ops.gather(ops.gather(pred, samples, 0), frames, 2) / self.latent_scale + self.latent_shift
        video = self.decoder(z)  # [S, 3, F, H, W] in about [-1, 1]
        s, c, f, h, w = video.shape
        text = ops.gather(text, samples, 0)
        if self.kind == IMAGE:  # every frame scored on its own against its sample's caption
            images = video.transpose(0, 2, 1, 3, 4).reshape(s * f, c, h, w)
            score = self.score(images, ops.repeat_interleave(text, f, 0), rows, cols)
        else:  # [S, F, 3, H, W] clips
            score = self.score(video.transpose(0, 2, 1, 3, 4), text, rows, cols)
        return -self.scale * score.mean()


class Decoder(nn.Cell):
    """The frozen VAE's decode_video (model latents already unscaled), its blocks recomputed."""

    def __init__(self, vae, frames_per_call: int = 1):
        super().__init__()
        self.vae, self.frames_per_call = vae, frames_per_call
        dec = vae.decoder
        for block in [getattr(dec, "mid_block", None), *getattr(dec, "up_blocks", [])]:
            if block is not None:
                block.recompute()

    def construct(self, z):
        return self.vae.decode_video(z, self.frames_per_call)
