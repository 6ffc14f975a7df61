"""The train step: loss -> grads -> per-bucket flatten + sync -> unscale, global-norm clip ->
AdamW on the flat master -> EMA -> write the weights back into the model.

Each stage is a compiled function (ms.jit; PyNative when the run asks for it, with the same
numbers): one for forward+backward, and per bucket one to flatten/sync its gradients and one to
update it. Identical blocks share their compiled bucket functions. With grad_accum > 1, micro
steps only add flat gradients into each bucket's accumulator: nothing is communicated.
"""
import mindspore as ms
from mindspore import ParameterTuple, ops

from .optim import adamw_, ema_


class LocalSync:
    """Gradient synchronisation of a single process: nothing to do (parallel/ provides others)."""

    sharded_grads = False

    def reduce_grads(self, flat):
        return flat

    def gather_params(self, shard):
        return shard

    def shard_of(self, flat, lo, hi):
        return flat[lo:hi]

    def all_sum(self, x):
        return x

    def mean(self, x):
        return x


class BucketOps:
    """The compiled per-bucket functions (cached by input signature)."""

    def __init__(self, sync, beta1, beta2, eps, weight_decay, jit=True):
        self.sync = sync
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay
        wrap = ms.jit if jit else (lambda f: f)
        self.flatten = wrap(self._flatten)
        self.accumulate = wrap(self._accumulate)
        self.reduce = wrap(self._reduce)
        self.update = wrap(self._update)
        self.norm = wrap(self._norm)

    def _flat(self, padded, inv_scale, grads):
        flat = ops.cat([g.astype(ms.float32).reshape(-1) for g in grads])
        pad = padded - flat.shape[0]
        if pad > 0:
            flat = ops.cat([flat, ops.zeros(pad, ms.float32)])
        return flat * inv_scale

    def _reduce_flat(self, flat, lo, hi):
        """Synchronised gradient of this rank's shard and its sum of squares."""
        flat = self.sync.reduce_grads(flat)
        if not self.sync.sharded_grads:
            flat = flat[lo:hi]
        return flat, (flat * flat).sum()

    def _flatten(self, padded, lo, hi, inv_scale, *grads):
        return self._reduce_flat(self._flat(padded, inv_scale, grads), lo, hi)

    def _accumulate(self, acc, padded, inv_scale, *grads):
        ops.assign_add(acc, self._flat(padded, inv_scale, grads))
        return acc

    def _reduce(self, acc, lo, hi):
        out = self._reduce_flat(acc * 1.0, lo, hi)
        ops.assign(acc, ops.zeros_like(acc))
        return out

    def _norm(self, grad_clip, *sumsqs):
        total = ops.addn(list(sumsqs)) if len(sumsqs) > 1 else sumsqs[0]
        if self.sync.sharded_grads:
            total = self.sync.all_sum(total)
        norm = ops.sqrt(total)
        coef = ops.minimum(grad_clip / (norm + 1e-6), 1.0) if grad_clip > 0 else ops.ones_like(norm)
        return norm, coef, ops.isfinite(norm)

    def _update(self, master, m, v, ema, decay_mask, g, lr, bc1, bc2, coef, keep, ema_decay, slots, *params):
        new = adamw_(master, m, v, g * coef, decay_mask, lr, self.weight_decay, self.beta1, self.beta2, self.eps,
                     bc1, bc2, keep)
        if ema is not None:
            ema_(ema, new, ema_decay, keep)
        full = self.sync.gather_params(new)
        for p, (offset, size) in zip(params, slots):
            ops.assign(p, full[offset:offset + size].reshape(p.shape).astype(p.dtype))
        return lr


class TrainStep:
    def __init__(self, loss_cell, buckets, *, sync=None, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                 grad_clip=0.0, loss_scaling=False, jit=True):
        self.loss_cell = loss_cell
        self.buckets = buckets
        self.sync = sync or LocalSync()
        self.grad_clip = float(grad_clip)
        self.loss_scaling = loss_scaling
        params = [p for b in buckets for p in b.params]
        self.spans, start = [], 0
        for b in buckets:
            self.spans.append((start, start + len(b.params)))
            start += len(b.params)
        self.grad_fn = ms.value_and_grad(self._forward, None, ParameterTuple(params), has_aux=True)
        self.grad_step = (ms.jit if jit else (lambda f: f))(self._grad_step)
        self.ops = BucketOps(self.sync, beta1, beta2, eps, weight_decay, jit)

    def _forward(self, scale, inv_accum, *inputs):
        loss = self.loss_cell(*inputs).astype(ms.float32).mean()
        return loss * scale * inv_accum, loss

    def _grad_step(self, scale, inv_accum, *inputs):
        (_, loss), grads = self.grad_fn(scale, inv_accum, *inputs)
        return loss, grads

    def _bucket_grads(self, grads):
        return [grads[a:b] for a, b in self.spans]

    def micro(self, scale, inv_accum, inv_scale, inputs):
        """Adds one micro-batch's gradients to the accumulators; returns its local loss."""
        loss, grads = self.grad_step(scale, inv_accum, *inputs)
        for b, g in zip(self.buckets, self._bucket_grads(grads)):
            self.ops.accumulate(b.grad_acc, b.padded, inv_scale, *g)
        return loss

    def apply(self, hyper, flats):
        """Clip by the global norm, update every bucket; returns (norm, finite)."""
        lr, bc1, bc2, ema_decay = hyper
        norm, coef, finite = self.ops.norm(self.grad_clip, *[s for _, s in flats])
        keep = finite if self.loss_scaling else None
        for b, (g, _) in zip(self.buckets, flats):
            slots = tuple((s.offset, s.size) for s in b.slots)
            self.ops.update(b.master, b.m, b.v, b.ema, b.decay_mask, g, lr, bc1, bc2, coef, keep, ema_decay,
                            slots, *b.params)
        return norm

    def fused(self, hyper, scale, inv_scale, inputs):
        loss, grads = self.grad_step(scale, 1.0, *inputs)
        flats = [self.ops.flatten(b.padded, b.lo, b.hi, inv_scale, *g)
                 for b, g in zip(self.buckets, self._bucket_grads(grads))]
        del grads
        return self.sync.mean(loss), self.apply(hyper, flats)

    def finish_accumulated(self, hyper, local_loss):
        flats = [self.ops.reduce(b.grad_acc, b.lo, b.hi) for b in self.buckets]
        return self.sync.mean(local_loss), self.apply(hyper, flats)
