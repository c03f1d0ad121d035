"""A slow, obvious numpy version of 1-D position-sensitive axial-attention.

Written from the paper / DeepLab2 definition with explicit loops over queries, so it
shares no code or tensor layout with the reference implementation it checks where the
DeepLab2 fixtures cannot (local spans, lengths beyond the encoding table):
test_attention_reference.py.
"""

import numpy as np


def batch_norm(x, gamma, beta, mean, variance, epsilon):
    return gamma * (x - mean) / np.sqrt(variance + epsilon) + beta


def attention_1d(x, weights, num_heads, span=None, epsilon=1e-3, training=False):
    """Position-sensitive attention of x [N, L, C] with explicit per-query windows.

    Args:
        x: float64 input [N, L, C].
        weights: dict with qkv_kernel [C, 2Dk+Dv]; bn_qkv/bn_similarity/bn_output
            each a dict of gamma, beta, moving_mean, moving_variance (flattened
            channel layouts: term*heads+head and term*Dv+head*dv+c); rq, rk [2M-1, dk],
            rv [2M-1, dv] relative tables with row M-1 = offset 0.
        num_heads: heads.
        span: None (global) or odd window length.
        epsilon: BN epsilon.
        training: batch statistics (over valid pairs) instead of moving ones.

    Returns:
        float64 [N, L, Dv].
    """
    n, length, _ = x.shape
    qkv_kernel = weights["qkv_kernel"]
    dv_total = weights["rv"].shape[1] * num_heads
    dk_total = (qkv_kernel.shape[1] - dv_total) // 2
    dk, dv = dk_total // num_heads, dv_total // num_heads
    centre = (weights["rq"].shape[0] - 1) // 2

    def norm(values, params, reduce_axes):
        if training:
            mean = values.mean(axis=reduce_axes, keepdims=True)
            var = values.var(axis=reduce_axes, keepdims=True)
        else:
            mean, var = params["moving_mean"], params["moving_variance"]
        return batch_norm(values, params["gamma"], params["beta"], mean, var, epsilon)

    qkv = norm(x @ qkv_kernel, weights["bn_qkv"], (0, 1))
    q = qkv[..., :dk_total].reshape(n, length, num_heads, dk)
    k = qkv[..., dk_total : 2 * dk_total].reshape(n, length, num_heads, dk)
    v = qkv[..., 2 * dk_total :].reshape(n, length, num_heads, dv)

    def row(offset):
        return int(np.clip(offset, -centre, centre)) + centre

    radius = length if span is None else (span - 1) // 2
    # Raw logits of every valid (query l, key m) pair: list of (l, m, [3, N, heads]).
    pairs = []
    for l in range(length):
        for m in range(max(0, l - radius), min(length, l + radius + 1)):
            r = row(m - l)
            content = np.einsum("nhd,nhd->nh", q[:, l], k[:, m])
            query_rpe = np.einsum("nhd,d->nh", q[:, l], weights["rq"][r])
            key_rpe = np.einsum("nhd,d->nh", k[:, m], weights["rk"][r])
            pairs.append((l, m, np.stack([content, query_rpe, key_rpe])))
    stacked = np.stack([p[2] for p in pairs])  # [pairs, 3, N, heads]
    params = {key: value.reshape(3, 1, num_heads) for key, value in weights["bn_similarity"].items()}
    normalised = norm(stacked, params, (0, 2)).sum(axis=1)  # [pairs, N, heads]

    out_content = np.zeros((n, length, num_heads, dv))
    out_rpe = np.zeros((n, length, num_heads, dv))
    for l in range(length):
        idx = [i for i, p in enumerate(pairs) if p[0] == l]
        keys = [pairs[i][1] for i in idx]
        logits = normalised[idx]  # [keys, N, heads]
        w = np.exp(logits - logits.max(axis=0))
        w /= w.sum(axis=0)
        for j, m in enumerate(keys):
            out_content[:, l] += w[j][..., None] * v[:, m]
            out_rpe[:, l] += w[j][..., None] * weights["rv"][row(m - l)]
    retrieved = np.stack([out_content, out_rpe], axis=2).reshape(n, length, 2 * dv_total)
    retrieved = norm(retrieved, weights["bn_output"], (0, 1))
    return retrieved.reshape(n, length, 2, dv_total).sum(axis=2)
