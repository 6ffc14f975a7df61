"""Float64 numpy re-implementations of official forward passes, shared by the tests that compare
our models against them."""
import math

import numpy as np


def np_ln(x, w, b, eps=1e-12):
    m = x.mean(-1, keepdims=True)
    return (x - m) / np.sqrt(((x - m) ** 2).mean(-1, keepdims=True) + eps) * w + b


def bert_reference(P, ids, mask, heads, layers):
    lin = lambda v, n: v @ P[n + ".weight"].T + P[n + ".bias"]
    b, n = ids.shape
    x = P["embeddings.word_embeddings.weight"][ids] + P["embeddings.position_embeddings.weight"][:n][None] + \
        P["embeddings.token_type_embeddings.weight"][0][None, None]
    x = np_ln(x, P["embeddings.LayerNorm.weight"], P["embeddings.LayerNorm.bias"])
    d = x.shape[-1]
    hd = d // heads
    erf = np.vectorize(math.erf)
    for i in range(layers):
        pre = f"encoder.layer.{i}"
        q, k, v = (lin(x, f"{pre}.attention.self.{p}").reshape(b, n, heads, hd) for p in ("query", "key", "value"))
        logits = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        logits = np.where(mask[:, None, None, :] > 0, logits, -np.inf)
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        a = np.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, n, d)
        h = np_ln(lin(a, f"{pre}.attention.output.dense") + x, P[f"{pre}.attention.output.LayerNorm.weight"],
                  P[f"{pre}.attention.output.LayerNorm.bias"])
        inner = lin(h, f"{pre}.intermediate.dense")
        inner = 0.5 * inner * (1 + erf(inner / math.sqrt(2)))
        x = np_ln(lin(inner, f"{pre}.output.dense") + h, P[f"{pre}.output.LayerNorm.weight"],
                  P[f"{pre}.output.LayerNorm.bias"])
    return x
