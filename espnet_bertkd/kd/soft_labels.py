"""How soft labels travel from the teacher to the model: the same compact arrays in both teacher modes.

Per utterance there are two arrays; in cached mode they are stored in kaldiio ark/scp files and ESPnet's data loader
feeds them to the model as the named inputs `kd_token` and `kd_prob` (declare them with
`--train_data_path_and_name_and_type DIR/kd_token.scp,kd_token,kaldi_ark` and likewise for `kd_prob`):

- `kd_token`: (N, 1 + k), int16 (int32 for vocabularies over 32767 tokens): column 0 is the teacher token w_i of the
  transcript, columns 1..k the ids of its top-k distribution.
- `kd_prob`: (N, k), float16: q_i on those ids.

Online mode packs the teacher's output into the same arrays, so both modes give the model identical targets.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from espnet_bertkd.kd.teacher import SoftLabels
from espnet_bertkd.utils.fileio import atomic_write_text

KD_TOKEN = "kd_token"
KD_PROB = "kd_prob"
KD_DATA_NAMES = (KD_TOKEN, KD_PROB)
META_FILE = "kd_meta.json"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.int16) if vocab_size <= np.iinfo(np.int16).max + 1 else np.dtype(np.int32)


def pack(labels: SoftLabels, vocab_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """SoftLabels -> (kd_token, kd_prob) arrays in their stored dtypes."""
    dtype = token_dtype(vocab_size)
    tokens = np.concatenate([labels.token_ids[:, None], labels.topk_ids], axis=1).astype(dtype)
    return tokens, labels.topk_probs.astype(np.float16)


def unpack(tokens: np.ndarray, probs: np.ndarray) -> SoftLabels:
    tokens = np.asarray(tokens, dtype=np.int64)
    return SoftLabels(tokens[:, 0], tokens[:, 1:], np.asarray(probs, dtype=np.float32))


@dataclass
class KDTargets:
    """A batch of teacher targets, padded: what the KD decoders learn from."""

    tokens: torch.Tensor  # (B, N) long, teacher tokens, padded with -1
    lengths: torch.Tensor  # (B,) long
    topk_ids: torch.Tensor  # (B, N, k) long, 0 at padding
    topk_probs: torch.Tensor  # (B, N, k) float32, rows renormalised to 1, 0 at padding


def batch_targets(
    kd_token: torch.Tensor,
    kd_token_lengths: torch.Tensor,
    kd_prob: torch.Tensor,
    utt_ids: Optional[Sequence[str]] = None,
    vocab_size: Optional[int] = None,
    topk: Optional[int] = None,
) -> KDTargets:
    """Loader tensors (padded by ESPnet's collate function) -> KDTargets, validated against the model.

    Stored probabilities are float16, so each row is renormalised; a row that cannot be (all zero, NaN) or a token
    outside the decoder's vocabulary is reported with its utterance id.
    """
    batch, length = kd_token.shape[:2]
    k = kd_token.size(-1) - 1 if kd_token.dim() == 3 else -1
    if kd_token.dim() != 3 or kd_prob.shape[:2] != kd_token.shape[:2] or kd_prob.size(-1) != k:
        raise ValueError(
            f"soft labels have shapes kd_token {tuple(kd_token.shape)} and kd_prob {tuple(kd_prob.shape)}; "
            "expected (B, N, 1+k) and (B, N, k): were they written by extract_soft_labels?"
        )
    if topk is not None and k != topk:
        raise ValueError(
            f"soft labels hold top-{k} distributions but model_conf.teacher.topk is {topk}: re-extract them or "
            "fix the config"
        )
    valid = torch.arange(length, device=kd_token.device)[None, :] < kd_token_lengths[:, None]
    tokens = kd_token[..., 0].masked_fill(~valid, -1).long()
    ids = kd_token[..., 1:].masked_fill(~valid[..., None], 0).long()
    probs = kd_prob.float().masked_fill(~valid[..., None], 0.0)
    sums = probs.sum(-1)
    bad = valid & ~(torch.isfinite(sums) & (sums > 0))
    if vocab_size is not None:
        bad |= valid & ((tokens >= vocab_size) | (ids >= vocab_size).any(-1) | (tokens < 0))
    if bad.any():
        b = int(bad.any(-1).nonzero()[0])
        who = utt_ids[b] if utt_ids is not None else f"batch row {b}"
        raise ValueError(
            f"soft labels of utterance {who!r} are invalid (probabilities not normalisable or token ids outside "
            f"the teacher vocabulary of {vocab_size}): were they written by a different teacher?"
        )
    probs = probs / sums.clamp_min(1e-12)[..., None]
    return KDTargets(tokens, kd_token_lengths.long(), ids, probs)


def collate_arrays(arrays: Sequence[Tuple[np.ndarray, np.ndarray]]) -> Dict[str, torch.Tensor]:
    """Pad per-utterance (kd_token, kd_prob) arrays exactly as ESPnet's collate function does (int pad -1)."""
    tokens = [torch.from_numpy(t.astype(np.int64)) for t, _ in arrays]
    probs = [torch.from_numpy(p.astype(np.float32)) for _, p in arrays]
    return {
        KD_TOKEN: pad_sequence(tokens, batch_first=True, padding_value=-1),
        f"{KD_TOKEN}_lengths": torch.tensor([len(t) for t in tokens], dtype=torch.long),
        KD_PROB: pad_sequence(probs, batch_first=True, padding_value=0.0),
    }


def read_scp_keys(path: os.PathLike) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.split(maxsplit=1)[0] for line in f if line.strip()]


def write_meta(directory: os.PathLike, meta: Mapping[str, Any]) -> None:
    """Write kd_meta.json atomically (temporary name, then rename)."""
    # parallel jobs write the same file: the temporary name is per process
    atomic_write_text(Path(directory) / META_FILE, json.dumps(dict(meta), indent=2, sort_keys=True) + "\n")


def read_meta(directory: os.PathLike) -> Optional[Dict[str, Any]]:
    path = Path(directory) / META_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def check_coverage(scp: os.PathLike, utt_ids: Iterable[str], reference: str) -> None:
    """Fail fast, naming the utterance, when a soft-label scp lacks an utterance of the data set."""
    have = set(read_scp_keys(scp))
    missing = [u for u in utt_ids if u not in have]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ValueError(
            f"{scp} has no soft labels for utterance {missing[0]!r}{more} listed in {reference}: "
            "re-run soft-label extraction for this data set"
        )


def check_meta(directory: os.PathLike, expected: Mapping[str, Any]) -> None:
    """Compare the stored teacher fingerprint with the one the config asks for (only the keys both name)."""
    meta = read_meta(directory)
    if meta is None:
        return
    for key, value in expected.items():
        if value is not None and key in meta and meta[key] != value:
            raise ValueError(
                f"{Path(directory) / META_FILE}: soft labels were written with {key}={meta[key]!r} but the config "
                f"asks for {key}={value!r}; re-extract them or fix the config"
            )
