"""AdamW (decoupled weight decay, PyTorch semantics) and EMA on flat fp32 vectors.

`decay_mask` is 1 where weight decay applies and 0 on biases, norms and embeddings. With `keep`
(fp16 loss scaling) an overflowed step leaves every state unchanged."""
from mindspore import ops


def adamw_(master, m, v, g, decay_mask, lr, weight_decay, beta1, beta2, eps, bc1, bc2, keep=None):
    if keep is not None:
        g = ops.where(keep, g, ops.zeros_like(g))
    m_new = beta1 * m + (1.0 - beta1) * g
    v_new = beta2 * v + (1.0 - beta2) * g * g
    p_new = master * (1.0 - lr * weight_decay * decay_mask) - lr * (m_new / bc1) / (ops.sqrt(v_new / bc2) + eps)
    if keep is not None:
        m_new, v_new, p_new = ops.where(keep, m_new, m), ops.where(keep, v_new, v), ops.where(keep, p_new, master)
    ops.assign(m, m_new)
    ops.assign(v, v_new)
    ops.assign(master, p_new)
    return p_new


def ema_(ema, weights, decay, keep=None):
    new = decay * ema + (1.0 - decay) * weights
    if keep is not None:
        new = ops.where(keep, new, ema)
    ops.assign(ema, new)
    return new
