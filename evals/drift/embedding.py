"""Embedding drift of prompts: MMD with a permutation test, and the share far from every cluster.

Why two numbers: MMD (maximum mean discrepancy, RBF kernel, bandwidth by the median
heuristic on the reference) sees any change of the prompt distribution and gives a
p-value; the far share says how much of the traffic is *new* (prompts farther from every
reference cluster than 95 % of the reference itself is), which is what a retrain can fix
and what a person reading the report understands.

Bounded cost: the reference keeps ``MMD_SAMPLE`` embeddings (and ``CLUSTERS`` k-means
centroids of up to ``MAX_EMBED`` of them) in its summary; a window embeds at most
``MAX_EMBED`` of its prompts (a deterministic sample), compares all of them with the
centroids (O(n k)), and runs MMD on ``MMD_SAMPLE`` of them. The kernel matrix is
(2 MMD_SAMPLE)^2 whatever the window size, and the permutations reuse it (one matrix
product for all of them), so never an n-by-n kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

MMD_SAMPLE = 1000
MAX_EMBED = 10_000
CLUSTERS = 16
PERMUTATIONS = 500
FAR_QUANTILE = 0.95
SEED = 20261202


@dataclass
class EmbeddingReference:
    sample: np.ndarray  # (m, d) float32, L2-normalised
    centroids: np.ndarray  # (k, d) float32, L2-normalised
    far_threshold: float  # cosine distance to the nearest centroid above which a prompt is "far"
    bandwidth: float  # RBF sigma^2 * 2 (median squared distance of the reference sample)
    n_prompts: int

    def arrays(self) -> dict[str, np.ndarray]:
        return {"emb_sample": self.sample, "emb_centroids": self.centroids}

    def meta(self) -> dict[str, Any]:
        return {"far_threshold": self.far_threshold, "bandwidth": self.bandwidth, "n_prompts": self.n_prompts}


@dataclass(frozen=True)
class EmbeddingDrift:
    mmd2: float
    mmd_pvalue: float
    far_share: float
    far_pvalue: float
    ref_size: int
    cur_size: int
    embedded: int


def sample_texts(texts: list[str], limit: int, seed: int = SEED) -> list[str]:
    if len(texts) <= limit:
        return list(texts)
    idx = np.sort(np.random.default_rng(seed).choice(len(texts), limit, replace=False))
    return [texts[i] for i in idx]


def kmeans(x: np.ndarray, k: int, iters: int = 25, seed: int = SEED) -> np.ndarray:
    """Spherical k-means (cosine), k-means++ seeding, fixed seed: the same reference, the same clusters."""
    rng = np.random.default_rng(seed)
    k = max(1, min(k, len(x)))
    centers = [x[int(rng.integers(len(x)))]]
    d = 1.0 - x @ centers[0]
    for _ in range(1, k):
        p = np.clip(d, 0, None) ** 2
        idx = int(rng.choice(len(x), p=p / p.sum())) if p.sum() > 0 else int(rng.integers(len(x)))
        centers.append(x[idx])
        d = np.minimum(d, 1.0 - x @ x[idx])
    c = np.stack(centers)
    for _ in range(iters):
        assign = np.argmax(x @ c.T, axis=1)
        new = np.zeros_like(c)
        np.add.at(new, assign, x)
        norms = np.linalg.norm(new, axis=1, keepdims=True)
        new = np.where(norms > 0, new / np.clip(norms, 1e-12, None), c)
        if np.allclose(new, c, atol=1e-6):
            break
        c = new.astype(np.float32)
    return c.astype(np.float32)


def nearest_distance(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Cosine distance of each row to its nearest centroid."""
    return np.asarray(1.0 - np.max(x @ centroids.T, axis=1), dtype=np.float64)


def summarise(prompts: list[str], *, embed: Any = None) -> EmbeddingReference | None:
    """The reference side, computed once; None when the window carries no prompt text."""
    if not prompts:
        return None
    if embed is None:
        from evals.embeddings import embed
    vecs = embed(sample_texts(prompts, MAX_EMBED))
    # Clusters from half of the reference, the far threshold from the other half: distances
    # of the prompts a clustering was fitted on are optimistic, and an in-sample threshold
    # would call ~10 % of undrifted traffic "far" instead of 5 %.
    fit, held = (vecs[0::2], vecs[1::2]) if len(vecs) >= 2 * CLUSTERS else (vecs, vecs)
    cents = kmeans(fit, CLUSTERS)
    far = float(np.quantile(nearest_distance(held, cents), FAR_QUANTILE))
    sample = vecs[np.sort(np.random.default_rng(SEED).choice(len(vecs), min(MMD_SAMPLE, len(vecs)), replace=False))]
    sq = _sqdist(sample, sample)
    off = sq[~np.eye(len(sample), dtype=bool)]
    bandwidth = float(np.median(off)) if off.size else 1.0
    return EmbeddingReference(sample=sample.astype(np.float32), centroids=cents, far_threshold=far,
                              bandwidth=max(bandwidth, 1e-6), n_prompts=len(prompts))


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances of unit vectors: 2 - 2 cos."""
    return np.asarray(np.clip(2.0 - 2.0 * (a.astype(np.float64) @ b.astype(np.float64).T), 0.0, None))


def mmd_permutation(x: np.ndarray, y: np.ndarray, bandwidth: float, permutations: int = PERMUTATIONS,
                    seed: int = SEED) -> tuple[float, float]:
    """Unbiased MMD^2 of two samples (RBF kernel exp(-d^2 / bandwidth)) and its permutation p-value.

    All permutations in one product: with the kernel K (diagonal zeroed) and a 0/1 column
    per permutation marking the "x" side, sum K_xx = a'Ka, sum K_xy = a'K1 - a'Ka and
    sum K_yy = 1'K1 - 2 sum K_xy - sum K_xx.
    """
    m, n = len(x), len(y)
    z = np.vstack([x, y])
    k = np.exp(-_sqdist(z, z) / bandwidth)
    np.fill_diagonal(k, 0.0)
    total = float(k.sum())
    rows = k.sum(axis=1)
    rng = np.random.default_rng(seed)
    labels = np.zeros((m + n, permutations + 1))
    labels[:m, 0] = 1.0  # column 0: the observed split
    for p in range(1, permutations + 1):
        labels[rng.permutation(m + n)[:m], p] = 1.0
    s_xx = np.einsum("ip,ip->p", labels, k @ labels)
    s_xy = labels.T @ rows - s_xx
    s_yy = total - 2.0 * s_xy - s_xx
    stat = s_xx / (m * (m - 1)) + s_yy / (n * (n - 1)) - 2.0 * s_xy / (m * n)
    observed = float(stat[0])
    pvalue = float((1 + np.sum(stat[1:] >= observed)) / (1 + permutations))
    return observed, pvalue


def compare(ref: EmbeddingReference, prompts: list[str], *, embed: Any = None) -> EmbeddingDrift:
    """A window's prompts against the stored reference."""
    if embed is None:
        from evals.embeddings import embed
    cur = embed(sample_texts(prompts, MAX_EMBED, seed=SEED + 1))
    dist = nearest_distance(cur, ref.centroids)
    far = int(np.sum(dist > ref.far_threshold))
    share = far / len(cur)
    expected = 1.0 - FAR_QUANTILE
    # one-sided binomial test: more far prompts than the reference's own 5 %
    from scipy.stats import binomtest

    far_p = float(binomtest(far, len(cur), expected, alternative="greater").pvalue)
    pick = np.random.default_rng(SEED + 2).choice(len(cur), min(MMD_SAMPLE, len(cur)), replace=False)
    mmd2, mmd_p = mmd_permutation(ref.sample, cur[np.sort(pick)], ref.bandwidth)
    return EmbeddingDrift(mmd2=mmd2, mmd_pvalue=mmd_p, far_share=share, far_pvalue=far_p,
                          ref_size=len(ref.sample), cur_size=len(pick), embedded=len(cur))


def is_finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)
