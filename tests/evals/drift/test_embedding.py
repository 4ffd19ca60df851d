"""Embedding drift: MMD permutation test and far-from-clusters share (real MiniLM model)."""

from __future__ import annotations

import numpy as np

from evals.drift import embedding, synthetic


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_mmd_permutation_quiet_on_one_distribution_and_loud_on_a_shift() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, (1, 32))
    x = _unit(base + rng.normal(0, 1, (400, 32)))
    y = _unit(base + rng.normal(0, 1, (400, 32)))
    z = _unit(base + 0.6 + rng.normal(0, 1, (400, 32)))
    bw = float(np.median(embedding._sqdist(x, x)))
    mmd_same, p_same = embedding.mmd_permutation(x, y, bw, permutations=200)
    mmd_shift, p_shift = embedding.mmd_permutation(x, z, bw, permutations=200)
    assert p_same > 0.05 and abs(mmd_same) < 0.01
    assert p_shift <= 1 / 201 + 1e-12 and mmd_shift > 10 * abs(mmd_same)


def test_mmd_matches_the_direct_unbiased_formula() -> None:
    rng = np.random.default_rng(1)
    x, y = _unit(rng.normal(0, 1, (30, 8))), _unit(rng.normal(0.2, 1, (40, 8)))
    bw = 1.3
    k = lambda a, b: np.exp(-embedding._sqdist(a, b) / bw)  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m, n = len(x), len(y)
    direct = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
              - 2 * kxy.mean())
    got, _ = embedding.mmd_permutation(x, y, bw, permutations=10)
    assert abs(got - direct) < 1e-9


def test_new_topic_prompts_are_far_from_the_reference_clusters() -> None:
    rng = np.random.default_rng(2)
    n = 300
    topics = np.array(synthetic.TOPICS)
    ref = synthetic.prompts(rng.choice(topics, n), np.full(n, 40), rng)
    same = synthetic.prompts(rng.choice(topics, n), np.full(n, 40), rng)
    shifted_topics = np.where(rng.random(n) < 0.3, "legal", rng.choice(topics, n))
    shifted = synthetic.prompts(shifted_topics, np.full(n, 40), rng)
    summary = embedding.summarise(ref)
    assert summary is not None and summary.sample.shape[1] == 384
    quiet = embedding.compare(summary, same)
    loud = embedding.compare(summary, shifted)
    assert quiet.far_share < 0.12 and quiet.mmd_pvalue > 0.01
    assert loud.far_share > 0.25 and loud.far_pvalue < 1e-6 and loud.mmd_pvalue < 0.01
    assert embedding.summarise([]) is None
