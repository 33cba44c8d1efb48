"""How N parallel jobs share a list of utterances: the one convention of the plugin and the recipe toolkit.

Job `j` (1-based) of `nj` takes the contiguous slice `[total*(j-1)//nj, total*j//nj)` of the list, in order: the
parts differ in size by at most one and the later parts take the remainder (7 lines in 3 jobs: 2, 2, 3). Soft-label
extraction (espnet_bertkd.kd.extract) names its resumable chunks by (nj, job) and has always split this way, so
chunks written by earlier runs stay valid; the recipe's key-file split (espnet_bertkd.recipe.scp) uses the same
boundaries. (Kaldi's split_scp.pl gives the remainder to the first parts instead: 3, 2, 2.)
"""
from __future__ import annotations

from typing import List


def job_range(total: int, nj: int, job: int) -> range:
    """The indices of the `total` items that job `job` (1-based) of `nj` handles."""
    if nj < 1 or not 1 <= job <= nj:
        raise ValueError(f"job must be in 1..{nj}, got {job} (nj={nj})")
    return range(total * (job - 1) // nj, total * job // nj)


def split_sizes(total: int, nj: int) -> List[int]:
    """How many of `total` items each of the `nj` jobs takes (the lengths of job_range)."""
    return [len(job_range(total, nj, job)) for job in range(1, nj + 1)]
