"""The train step: loss -> grads -> per-bucket flatten + sync -> unscale, global-norm clip ->
AdamW on the flat fp32 master -> EMA -> write the weights back into the model.

Each stage is a compiled function (ms.jit; PyNative when the run asks for it, with the same
numbers): one for forward+backward, and per bucket one to flatten and synchronise its gradients
and one to update it. Identical blocks share their compiled bucket functions. With grad_accum > 1,
micro-steps add each bucket's gradients to an accumulator; under ZeRO 0/1 nothing is communicated
until the last one (ZeRO-2/3 reduce every micro-step, keeping only the shard).
"""
import mindspore as ms
from mindspore import ParameterTuple, ops

from ..parallel.sync import GradSync, flatten_local, flatten_rank_major
from .optim import adamw_, ema_


def _as(x, dtype):
    """x in `dtype`, without a cast kernel when it already is (resolved when compiling)."""
    return x if x.dtype == dtype else x.astype(dtype)


class BucketOps:
    """The compiled per-bucket functions (cached by input signature)."""

    def __init__(self, sync: GradSync, beta1, beta2, eps, weight_decay, jit=True):
        self.grad_sync = sync
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay
        wrap = ms.jit if jit else (lambda f: f)
        self.local_grad = wrap(self._local_grad)
        self.accumulate = wrap(self._accumulate)
        self.finish = wrap(self._finish)
        self.norm = wrap(self._norm)
        self.update = wrap(self._update)

    def _reduced(self, layout, sharded, inv_scale, grads):
        """This rank's averaged local gradient [L] of one bucket."""
        if sharded:
            return self.grad_sync.reduced_shard(flatten_local(grads) * inv_scale)
        return self.grad_sync.reduce(flatten_rank_major(grads, layout, self.grad_sync.shards) * inv_scale)

    def _local_grad(self, layout, sharded, inv_scale, *grads):
        g = self._reduced(layout, sharded, inv_scale, grads)
        return g, (g * g).sum()

    def _accumulate(self, acc, layout, sharded, inv_scale, *grads):
        if sharded or self.grad_sync.zero_stage >= 2:  # keep only the (reduced) shard
            ops.assign_add(acc, self._reduced(layout, sharded, inv_scale, grads))
        else:  # nothing is communicated on micro-steps
            ops.assign_add(acc, flatten_rank_major(grads, layout, self.grad_sync.shards) * inv_scale)
        return acc

    def _finish(self, acc, sharded):
        g = acc * 1.0 if (sharded or self.grad_sync.zero_stage >= 2) else self.grad_sync.reduce(acc * 1.0)
        ops.assign(acc, ops.zeros_like(acc))
        return g, (g * g).sum()

    def _norm(self, grad_clip, *sumsqs):
        total = self.grad_sync.total(ops.addn(list(sumsqs)) if len(sumsqs) > 1 else sumsqs[0])
        norm = ops.sqrt(total)
        coef = ops.minimum(grad_clip / (norm + 1e-6), 1.0) if grad_clip > 0 else ops.ones_like(norm)
        return norm, coef, ops.isfinite(norm)

    def _update(self, master, m, v, ema, decay_mask, g, lr, bc1, bc2, coef, keep, ema_decay, layout, sharded,
                *params):
        new = adamw_(master, m, v, g * coef, decay_mask, lr, self.weight_decay, self.beta1, self.beta2, self.eps,
                     bc1, bc2, keep)
        if ema is not None:
            ema_(ema, new, ema_decay, keep)
        if sharded:  # the parameters are the local segments
            for p, (_, s, off) in zip(params, layout):
                ops.assign(p, new[off:off + s].astype(p.dtype))
            return lr
        if self.grad_sync.shards == 1:  # the common case in as few kernels as possible (CPU launches cost)
            for p, (numel, _, off) in zip(params, layout):
                ops.assign(p, _as(new[off:off + numel].reshape(p.shape), p.dtype))
            return lr
        full = self.grad_sync.gather(new)  # [shards, L]
        for p, (numel, s, off) in zip(params, layout):
            ops.assign(p, _as(full[:, off:off + s].reshape(-1)[:numel].reshape(p.shape), p.dtype))
        return lr


class TrainStep:
    def __init__(self, loss_cell, buckets, *, sync: GradSync = None, beta1=0.9, beta2=0.999, eps=1e-8,
                 weight_decay=0.0, grad_clip=0.0, loss_scaling=False, jit=True):
        self.loss_cell = loss_cell
        self.buckets = buckets
        self.grad_sync = sync or GradSync()
        self.grad_clip = float(grad_clip)
        self.loss_scaling = loss_scaling
        # each SP rank differentiates loss / sp: cotangents stay partial sums over the SP group
        self.inv_sp = 1.0 / self.grad_sync.sp
        params = [p for b in buckets for p in b.params]
        self.spans, start = [], 0
        for b in buckets:
            self.spans.append((start, start + len(b.params)))
            start += len(b.params)
        self.grad_fn = ms.value_and_grad(self._forward, None, ParameterTuple(params), has_aux=True)
        wrap = ms.jit if jit else (lambda f: f)
        self.grad_step = wrap(self._grad_step)
        self.mean_loss = wrap(self._mean_loss)
        self.ops = BucketOps(self.grad_sync, beta1, beta2, eps, weight_decay, jit)

    def _forward(self, scale, inv_accum, batch):
        loss = self.loss_cell(batch).astype(ms.float32).mean()
        return loss * (scale * inv_accum * self.inv_sp), loss

    def _mean_loss(self, loss):
        return self.grad_sync.mean_over_dp(loss)

    def _grad_step(self, scale, inv_accum, batch):
        (_, loss), grads = self.grad_fn(scale, inv_accum, batch)
        return loss, grads

    def _bucket_grads(self, grads):
        return [grads[a:b] for a, b in self.spans]

    def micro(self, scale, inv_accum, inv_scale, batch):
        """Adds one micro-batch's gradients to the accumulators; returns its local loss. `batch`:
        the loss cell's named inputs ({field: Tensor})."""
        loss, grads = self.grad_step(scale, inv_accum, ms.mutable(batch))
        for b, g in zip(self.buckets, self._bucket_grads(grads)):
            self.ops.accumulate(b.grad_acc, b.layout, b.sharded, inv_scale, *g)
        return loss

    def apply(self, hyper, grads_and_sumsqs):
        """Clip by the global norm and update every bucket; returns the norm."""
        lr, bc1, bc2, ema_decay = hyper
        norm, coef, finite = self.ops.norm(self.grad_clip, *[s for _, s in grads_and_sumsqs])
        keep = finite if self.loss_scaling else None
        for b, (g, _) in zip(self.buckets, grads_and_sumsqs):
            self.ops.update(b.master, b.m, b.v, b.ema, b.decay_mask, g, lr, bc1, bc2, coef, keep, ema_decay,
                            b.layout, b.sharded, *b.params)
        return norm

    def fused(self, hyper, scale, inv_scale, batch):
        # mutable: a dict of tensors is an input of the compiled graph, not a constant baked into it
        # (which would compile a new graph every step)
        loss, grads = self.grad_step(scale, 1.0, ms.mutable(batch))
        local = [self.ops.local_grad(b.layout, b.sharded, inv_scale, *g)
                 for b, g in zip(self.buckets, self._bucket_grads(grads))]
        del grads
        return self.mean_loss(loss), self.apply(hyper, local)

    def finish_accumulated(self, hyper, local_loss):
        local = [self.ops.finish(b.grad_acc, b.sharded) for b in self.buckets]
        return self.mean_loss(local_loss), self.apply(hyper, local)
