"""Is system A's WER really different from system B's? A paired bootstrap over test utterances (Koehn 2004;
Bisani and Ney 2004), pooled over training seeds.

What it covers: the test set is a sample of utterances, so they are resampled, each utterance's errors of both
systems kept together (the pairing removes the utterance's own difficulty); the statistic is the WER difference
averaged over the training seeds, on the same resampled utterances. With one seed this is the classic paired
bootstrap. Seeds are averaged, not resampled: the test says whether these trained models differ on this kind of
data, not how a new seed would fall. With a handful of seeds, the per-seed differences (evidence.py reports them,
and its `verdict` asks them all to agree) are the check on training noise.

The statistic is delta = mean over seeds of (WER_A - WER_B) in percentage points; with per-utterance error
differences d_u = mean_s (e_A,s,u - e_B,s,u) and reference lengths n_u it is 100 * sum_u d_u / sum_u n_u. Each
bootstrap sample draws the utterances with replacement and recomputes it. The two-sided p-value is
2 * min(P*(delta <= 0), P*(delta >= 0)) (capped at 1): how often the resampled difference reaches the other side of
zero, each count plus one over the samples plus one when sampled (Davison and Hinkley 1997: a sampled p is never
0); the 95 % interval is the 2.5th to 97.5th percentile of the resampled deltas.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class PairedTest:
    delta: float  # mean over seeds of WER_A - WER_B, percentage points (negative: A better)
    p: float  # two-sided
    ci_low: float
    ci_high: float
    utterances: int
    seeds: int
    samples: int  # bootstrap samples (0: every resample enumerated exactly)

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def _as_seed_matrix(errors: Sequence, name: str) -> np.ndarray:
    """(seeds, utterances) errors; a flat sequence is one seed."""
    array = np.asarray(errors, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"{name}: expected per-utterance errors (seeds x utterances), got shape {array.shape}")
    return array


def paired_bootstrap(
    errors_a: Sequence, errors_b: Sequence, words: Sequence[int], samples: int = 10000, seed: int = 0,
    exact: bool = False,
) -> PairedTest:
    """Compare systems A and B on the same utterances (and seeds): errors_x[s][u] word errors of utterance u with
    training seed s, words[u] its reference words. `exact` enumerates all n^n resamples (tiny n, for tests)."""
    a, b = _as_seed_matrix(errors_a, "errors_a"), _as_seed_matrix(errors_b, "errors_b")
    n = np.asarray(words, dtype=np.float64)
    if a.shape != b.shape or a.shape[1] != len(n):
        raise ValueError(f"errors_a {a.shape}, errors_b {b.shape} and words ({len(n)},) must describe the same "
                         "seeds and utterances")
    if n.sum() <= 0:
        raise ValueError("the reference has no words")
    d = (a - b).mean(axis=0)
    delta = 100.0 * d.sum() / n.sum()
    if exact:
        draws = np.array(list(itertools.product(range(len(n)), repeat=len(n))))
    else:
        draws = np.random.default_rng(seed).integers(0, len(n), size=(samples, len(n)))
    resampled = 100.0 * d[draws].sum(axis=1) / np.maximum(n[draws].sum(axis=1), 1e-12)
    at_or_below, at_or_above = int(np.sum(resampled <= 0)), int(np.sum(resampled >= 0))
    if exact:
        p = 2.0 * min(at_or_below, at_or_above) / len(resampled)
    else:
        p = 2.0 * (min(at_or_below, at_or_above) + 1) / (samples + 1)
    p = min(1.0, p)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return PairedTest(float(delta), p, float(low), float(high), len(n), a.shape[0], 0 if exact else samples)


def seed_spread(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """Mean and sample standard deviation (ddof 1; None for a single value) of per-seed results."""
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else None}
