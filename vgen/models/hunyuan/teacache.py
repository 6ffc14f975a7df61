"""TeaCache (Liu et al., 2024) for HunyuanVideo sampling: a step whose first-block input has barely
changed since the last step reuses that step's residual of the blocks (output tokens minus input
tokens) instead of running the 60 blocks. The change is the relative L1 distance of the first
double block's modulated image input between consecutive steps, rescaled by the published
polynomial for HunyuanVideo and accumulated; a step runs the blocks when the sum reaches the
threshold (then restarting from 0), and always at the first step and the last two (as the
official step counter does). Thresholds published: 0.1 (about 1.6x faster), 0.15 (about 2.1x).

The decision is taken on the host between compiled stages (embed, first-block input, blocks,
head: HunyuanDiT's own stages of its construct); under SP every rank would see other tokens, so it
runs without SP."""
import mindspore as ms
import numpy as np
from mindspore import ops

COEFFICIENTS = (7.33226126e+02, -4.01131952e+02, 6.75869174e+01, -3.14987800e+00, 9.61237896e-02)


class TeaCache:
    """Called as a sampler calls its compiled denoiser: (x, t, inputs) -> prediction (Tensors)."""

    def __init__(self, net, threshold: float, steps: int, jit: bool = True):
        self.net, self.threshold, self.steps = net, float(threshold), int(steps)
        wrap = ms.jit if jit else (lambda f: f)
        self.embed, self.signal = wrap(self._embed), wrap(self._signal)
        self.blocks, self.head, self.change = wrap(self._blocks), wrap(self._head), wrap(self._change)
        self.reset()

    def reset(self) -> None:
        """A new sampling loop: nothing cached."""
        self.calls, self.accumulated, self.previous, self.residual = 0, 0.0, None, None
        self.computed = self.skipped = 0

    def _embed(self, x, t, inputs):
        return self.net.embed(x, t, inputs["text_emb"], inputs["text_mask"], inputs["text_pooled"], inputs["guidance"])

    def _signal(self, img, vec):
        return self.net.first_block_input(img, vec)

    def _blocks(self, img, txt, vec, key_mask, cos, sin):
        out = self.net.blocks_forward(img, txt, vec, key_mask, cos, sin)
        return out, out - img

    def _head(self, img, vec, x):
        return self.net.head(img, vec, x.shape)

    @staticmethod
    def _change(now, before):
        return ops.abs(now - before).astype(ms.float32).mean() / ops.abs(before).astype(ms.float32).mean()

    def __call__(self, x, t, inputs):
        img, txt, vec, key_mask, cos, sin = self.embed(x, t, inputs)
        signal = self.signal(img, vec)
        step, self.calls = self.calls, self.calls + 1
        run = step == 0 or step >= self.steps - 2 or self.residual is None
        if not run:
            self.accumulated += float(np.polyval(COEFFICIENTS, float(self.change(signal, self.previous))))
            run = self.accumulated >= self.threshold
        self.previous = signal
        if run:
            self.accumulated = 0.0
            img, self.residual = self.blocks(img, txt, vec, key_mask, cos, sin)
            self.computed += 1
        else:
            img = img + self.residual
            self.skipped += 1
        return self.head(img, vec, x)
