"""How soft labels travel from the teacher to the model: the same compact arrays in both teacher modes.

Per utterance there are two arrays; in cached mode they are stored in Kaldi ark/scp files and ESPnet's data loader
feeds them to the model as the named inputs `kd_token` and `kd_prob` (declare them with
`--train_data_path_and_name_and_type DIR/kd_token.scp,kd_token,kaldi_ark` and likewise for `kd_prob`):

- `kd_token`: (N, 1 + k): column 0 is the teacher token w_i of the transcript, columns 1..k the ids of its top-k
  distribution (integers below 2**24, exact in float32).
- `kd_prob`: (N, k): q_i on those ids.

Both are stored as Kaldi float32 matrices (`STORAGE`), the one matrix type that ESPnet's `kaldi_ark` loader reads in
every supported release: 202511 reads arks with kaldiio (which also took numpy arrays inside an ark, the format of
earlier versions of this plugin), 202611 with omniio, which reads Kaldi's own types only.

Online mode packs the teacher's output into the same arrays, so both modes give the model identical targets.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from espnet_bertkd.utils.fileio import (atomic_dir, atomic_write_text, check_output_dir, first_few, iter_table,
                                       read_dict, read_keys, read_pairs, write_table)

KD_TOKEN = "kd_token"
KD_PROB = "kd_prob"
KD_DATA_NAMES = (KD_TOKEN, KD_PROB)
META_FILE = "kd_meta.json"
STORAGE = "kaldi-float32-matrix"  # kd_meta.json's "storage": how the arrays are stored (see the module docstring)
# What a kd_meta.json without "storage" means: written by espnet-bertkd 0.1, numpy arrays inside the ark.
LEGACY_STORAGE = "numpy-in-ark (espnet-bertkd 0.1)"
MAX_TOKEN_ID = 2**24  # float32 holds every integer below it exactly
# Beside the scps: `<utt_id> <text hash>[ <context hash>]` per utterance, what the teacher saw when it labelled it
# (blake2b, 64 bits, of the transcript; with --context_utterances also of its neighbours). The preflight compares the
# text hash with the training transcripts; extraction recomputes the utterances whose line changed. Written last:
# soft labels without it are unverified (espnet-bertkd before 0.3, or an extraction that did not finish).
TEXT_HASH_FILE = "kd_text.hash"
TEXT_FINGERPRINT = "blake2b-64 of each transcript (and its context) in kd_text.hash"
SHARE_OWNER = "share_soft_labels"  # the owner marker of share_soft_labels' directories (check_output_dir)
UNKNOWN_HASH = "-"  # a kd_text.hash value that matches no text: the utterance is being re-extracted
# Set to 1 to train (one run) from soft labels that cannot be verified: no kd_meta.json or no kd_text.hash.
ACCEPT_UNVERIFIED_ENV = "ESPNET_BERTKD_ACCEPT_UNVERIFIED_SOFT_LABELS"



@dataclass(frozen=True)
class SoftLabels:
    """Teacher targets for one transcript: N teacher tokens, each with its top-k distribution."""

    token_ids: np.ndarray  # (N,) int64: the transcript in the teacher's vocabulary
    topk_ids: np.ndarray  # (N, k) int64
    topk_probs: np.ndarray  # (N, k) float32, rows sum to 1


def pack(labels: SoftLabels, vocab_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """SoftLabels -> (kd_token, kd_prob) float32 arrays, as they are stored."""
    if vocab_size > MAX_TOKEN_ID:
        raise ValueError(f"a teacher vocabulary of {vocab_size} tokens does not fit float32 storage (< {MAX_TOKEN_ID})")
    tokens = np.concatenate([labels.token_ids[:, None], labels.topk_ids], axis=1).astype(np.float32)
    return tokens, labels.topk_probs.astype(np.float32)


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

    Each probability row is renormalised in float32 (a half-precision teacher leaves rows that sum to 1 only within
    ~1e-3); a row that cannot be (all zero, NaN) or a token outside the decoder's vocabulary is reported with its
    utterance id.
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
    if vocab_size is not None:
        _check_ids(tokens, ids, valid, vocab_size, utt_ids)
    sums = _checked_sums(probs, valid, utt_ids)
    probs = probs / sums.clamp_min(1e-12)[..., None]
    return KDTargets(tokens, kd_token_lengths.long(), ids, probs)


def _utterance(utt_ids: Optional[Sequence[str]], row: int) -> str:
    return repr(utt_ids[row]) if utt_ids is not None else f"batch row {row}"


def _check_ids(
    tokens: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor, vocab_size: int, utt_ids: Optional[Sequence[str]]
) -> None:
    """Token ids must index the KD decoders' teacher vocabulary; labels of another teacher usually do not."""
    row_ids = torch.cat([tokens[..., None], ids], dim=-1)
    bad = valid & ((row_ids < 0) | (row_ids >= vocab_size)).any(-1)
    if not bad.any():
        return
    b, n = (int(x) for x in bad.nonzero()[0])
    offending = [int(x) for x in row_ids[b, n] if not 0 <= int(x) < vocab_size]
    raise ValueError(
        f"soft labels of utterance {_utterance(utt_ids, b)} hold token id {offending[0]} (teacher token {n}) but the "
        f"KD decoders predict a teacher vocabulary of {vocab_size} ids (0..{vocab_size - 1}): they were written by "
        "a different teacher than model_conf.teacher (teacher.model / teacher.vocab_size); re-extract them with "
        "this teacher or fix the config"
    )


def _checked_sums(probs: torch.Tensor, valid: torch.Tensor, utt_ids: Optional[Sequence[str]]) -> torch.Tensor:
    """Row sums of the stored top-k probabilities; a row that cannot be renormalised (NaN/inf, negative, all zero)
    is named, since it would turn the KL into NaN."""
    sums = probs.sum(-1)
    bad = valid & ~(torch.isfinite(sums) & (sums > 0) & (probs >= 0).all(-1))
    if bad.any():
        b, n = (int(x) for x in bad.nonzero()[0])
        raise ValueError(
            f"soft labels of utterance {_utterance(utt_ids, b)} have top-k probabilities that cannot be normalised "
            f"at teacher token {n}: {probs[b, n].tolist()}; re-extract them (a float16 teacher can overflow: use "
            "teacher.dtype float32 or bfloat16)"
        )
    return sums


def collate_arrays(arrays: Sequence[Tuple[np.ndarray, np.ndarray]]) -> Dict[str, torch.Tensor]:
    """Pad per-utterance (kd_token, kd_prob) arrays exactly as ESPnet's collate function does (int pad -1)."""
    tokens = [torch.from_numpy(t.astype(np.int64)) for t, _ in arrays]
    probs = [torch.from_numpy(p.astype(np.float32)) for _, p in arrays]
    return {
        KD_TOKEN: pad_sequence(tokens, batch_first=True, padding_value=-1),
        f"{KD_TOKEN}_lengths": torch.tensor([len(t) for t in tokens], dtype=torch.long),
        KD_PROB: pad_sequence(probs, batch_first=True, padding_value=0.0),
    }


def write_meta(directory: os.PathLike, meta: Mapping[str, Any]) -> None:
    """Write kd_meta.json atomically (temporary name, then rename)."""
    # parallel jobs write the same file: the temporary name is per process
    atomic_write_text(Path(directory) / META_FILE, json.dumps(dict(meta), indent=2, sort_keys=True) + "\n")


def read_meta(directory: os.PathLike) -> Optional[Dict[str, Any]]:
    path = Path(directory) / META_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def check_coverage(scp: os.PathLike, utt_ids: Iterable[str], reference: str, show: int = 5) -> None:
    """Fail before training, naming the first few missing utterances and how many there are, when a soft-label
    scp lacks utterances of the data set (ESPnet's loader would only fail on the first such batch)."""
    wanted = list(utt_ids)
    have = set(read_keys(scp))
    missing = [u for u in wanted if u not in have]
    if missing:
        raise ValueError(
            f"{scp} has no soft labels for {len(missing)} of the {len(wanted)} utterances listed in {reference}: "
            f"{first_few(missing, show)}. Re-run soft-label extraction (espnet_bertkd.bin.extract_soft_labels) for this data set"
        )


def meta_mismatches(meta: Mapping[str, Any], expected: Mapping[str, Any]) -> List[Tuple[str, Any, Any]]:
    """(key, stored, expected) for every key both name whose values differ; None in `expected` means unknown."""
    return [
        (key, meta[key], value) for key, value in expected.items()
        if value is not None and key in meta and meta[key] != value
    ]


def check_meta(directory: os.PathLike, expected: Mapping[str, Any]) -> None:
    """Compare the fingerprint stored by extract_soft_labels (kd_meta.json: teacher, vocab_size, vocab_hash, topk,
    temperature, ...) with what the config asks for, naming every differing field and both values."""
    path = Path(directory) / META_FILE
    meta = read_meta(directory)
    if meta is None:
        logging.warning("%s is missing: cannot check which teacher wrote the soft labels in %s", path, directory)
        return
    # Keys older versions did not write, with what those versions did.
    diffs = meta_mismatches({"storage": LEGACY_STORAGE, "drop_special": False, **meta}, expected)
    if diffs:
        stored = ", ".join(f"{k}={a!r}" for k, a, _ in diffs)
        wanted = ", ".join(f"{k}={b!r}" for k, _, b in diffs)
        raise ValueError(
            f"{path}: soft labels were written (by teacher {meta.get('teacher')!r}) with {stored} but the config "
            f"asks for {wanted}; re-extract them with the configured teacher or fix model_conf.teacher"
        )


# ------------------------------------------------------------------------------------------------ text fingerprints
def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def fingerprint(text: str, left: str = "", right: str = "", with_context: bool = False) -> str:
    """kd_text.hash's value for one utterance: its text hash, then (with contexts) the hash of what it saw around."""
    if not with_context:
        return text_hash(text)
    return f"{text_hash(text)} {text_hash(left + chr(0) + right)}"


def read_text_hashes(directory: os.PathLike) -> Optional[Dict[str, str]]:
    """utt -> kd_text.hash value, or None where there is no kd_text.hash."""
    path = Path(directory) / TEXT_HASH_FILE
    return read_dict(path) if path.exists() else None


def check_text_hashes(directory: os.PathLike, pairs: Sequence[Tuple[str, str]], reference: str, show: int = 5) -> None:
    """Refuse soft labels whose recorded transcript differs from the one training reads (an edited `text`), naming
    the first few utterances and how many. The caller handles a missing kd_text.hash."""
    hashes = read_text_hashes(directory) or {}
    changed = [utt for utt, text in pairs if hashes.get(utt, "").split(" ")[0] != text_hash(text)]
    if changed:
        raise ValueError(
            f"the soft labels in {directory} were extracted from other transcripts than {reference} for "
            f"{len(changed)} of its {len(pairs)} utterances: {first_few(changed, show)} (the text was edited after extraction). "
            f"Re-run soft-label extraction with the same --output_dir (`python -m "
            f"espnet_bertkd.bin.extract_soft_labels --asr_config CONFIG --text {reference} --output_dir {directory}`"
            ", or asr.sh --stage 4 --stop_stage 4): it recomputes only the changed utterances"
        )


# ------------------------------------------------------------------------------------------------ ark integrity
ARK_HEADERS = {b"\0BFM ": 4, b"\0BDM ": 8}  # Kaldi binary float/double matrix: element size


def _entry_end(f, offset: int) -> Optional[int]:
    """Where the binary matrix stored at `offset` ends, from its header; None for a type not known here."""
    f.seek(offset)
    head = f.read(15)
    size = ARK_HEADERS.get(head[:5])
    if len(head) < 15 and (size is not None or len(head) < 5):
        return offset + 15  # cut inside the header
    if size is None:
        return None
    rows = int.from_bytes(head[6:10], "little", signed=True)
    cols = int.from_bytes(head[11:15], "little", signed=True)
    return offset + 15 + rows * cols * size


def unreadable_entries(scp: os.PathLike) -> List[Tuple[str, str, str]]:
    """(utterance, ark, what is wrong) for each entry of a soft-label scp whose ark is missing or too short to hold
    it (a deleted or truncated ark file: ESPnet's loader would fail at the first batch that reads it). Entries in
    one ark are stored in order, so the ark's size is compared with each offset and with the end of the last one."""
    by_ark: Dict[str, List[Tuple[int, str]]] = {}
    problems: List[Tuple[str, str, str]] = []
    for entry in iter_table(scp):
        path, sep, offset = entry.value.rpartition(":")
        if not sep or not offset.isdigit():
            problems.append((entry.key, entry.value, "is not an ARK:OFFSET entry"))
            continue
        by_ark.setdefault(path, []).append((int(offset), entry.key))
    for ark, items in by_ark.items():
        try:
            size = os.path.getsize(ark)
        except OSError:
            problems += [(utt, ark, "does not exist") for _, utt in items]
            continue
        inside = [(off, utt) for off, utt in items if off < size]
        problems += [(utt, ark, f"is {size} bytes, shorter than the entry's offset {off}")
                     for off, utt in items if off >= size]
        if inside:
            off, utt = max(inside)
            with open(ark, "rb") as f:
                end = _entry_end(f, off)
            if end is not None and end > size:
                problems.append((utt, ark, f"is {size} bytes, the entry at offset {off} needs {end}"))
    return problems


def check_arks(scp: os.PathLike, show: int = 3) -> None:
    """Refuse a soft-label scp that points into missing or truncated arks, naming the scp, the ark and an
    utterance."""
    problems = unreadable_entries(scp)
    if problems:
        arks = sorted({ark for _, ark, _ in problems})
        listed = "; ".join(f"utterance {utt!r}: {ark} {why}" for utt, ark, why in problems[:show])
        more = f" (and {len(problems) - show} more entries)" if len(problems) > show else ""
        raise ValueError(
            f"{scp}: {len(problems)} soft-label entries point into {len(arks)} missing or truncated ark file(s): "
            f"{listed}{more}. Re-run soft-label extraction with the same --output_dir: it redoes the chunks whose "
            "arks are missing or short"
        )


# ------------------------------------------------------------------------------------------------ shared soft labels
# ESPnet's speed-perturbed copies (Kaldi's perturb_data_dir_speed.sh): `sp<factor>-<utt>`, the factor as written.
SPEED_PREFIX = re.compile(r"^sp(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)-")


def strip_speed_prefix(utt: str) -> Optional[str]:
    """`sp0.9-X` -> `X`; None for an id without ESPnet's speed-perturbation prefix."""
    match = SPEED_PREFIX.match(utt)
    return utt[match.end():] if match and match.end() < len(utt) else None


def _source_ids(pairs: Sequence[Tuple[str, str]], hashes: Mapping[str, str]) -> Tuple[List[str], List[str]]:
    """Each utterance's source in `hashes`: itself, else its id without the speed prefix. Returns (sources, the
    utterances with none)."""
    sources, orphans = [], []
    for utt, _ in pairs:
        source = utt if utt in hashes else strip_speed_prefix(utt)
        if source is None or source not in hashes:
            orphans.append(utt)
        sources.append(source or utt)
    return sources, orphans


def share_soft_labels(src_dir: os.PathLike, text: os.PathLike, output_dir: os.PathLike, show: int = 5,
                      overwrite: bool = False) -> int:
    """Soft labels for `text` (e.g. data/train_sp/text) made of those in `src_dir` (e.g. dump/kd/train): each
    utterance is found there under its own id or, failing that, without ESPnet's `sp<factor>-` prefix. A
    speed-perturbed copy has its source's transcript, so the teacher's targets are the same: its scp lines point at
    the source's ark offsets (nothing is copied), its kd_text.hash line is the source's and kd_meta.json is copied,
    so the training preflight verifies them as it verifies the source. An utterance with no source, or whose
    transcript differs from the one its source's labels were made from, is refused by name. The directory is
    written whole (atomic_dir): re-running after the source was re-extracted replaces it; a directory it did not
    make is refused unless `overwrite`, the source's always (check_output_dir). Returns the utterances written."""
    src, out = Path(src_dir), Path(output_dir)
    check_output_dir(out, SHARE_OWNER, [src, text], overwrite)
    missing = [str(src / name) for name in (f"{KD_TOKEN}.scp", f"{KD_PROB}.scp", TEXT_HASH_FILE, META_FILE)
               if not (src / name).is_file()]
    if missing:
        raise ValueError(f"{', '.join(missing)}: no such file; the extraction into {src} did not finish (or wrote "
                         "no fingerprints): run espnet_bertkd.bin.extract_soft_labels into it first")
    hashes = read_dict(src / TEXT_HASH_FILE)
    scps = {name: read_dict(src / f"{name}.scp") for name in KD_DATA_NAMES}
    pairs = read_pairs(text)
    sources, orphans = _source_ids(pairs, hashes)
    if orphans:
        raise ValueError(f"{text}: {len(orphans)} of its {len(pairs)} utterances have no soft labels in {src} (under "
                         f"their own id or without the sp<factor>- prefix): {first_few(orphans, show)}; extract "
                         "soft labels for their source set first")
    unlabelled = [utt for utt, source in zip((u for u, _ in pairs), sources)
                  if any(source not in scps[name] for name in KD_DATA_NAMES)]
    if unlabelled:
        raise ValueError(f"{src}: kd_text.hash lists the sources of {first_few(unlabelled, show)} but its scps lack "
                         "them (a damaged extraction): re-run espnet_bertkd.bin.extract_soft_labels into it")
    pending = [utt for utt, source in zip((u for u, _ in pairs), sources) if hashes[source] == UNKNOWN_HASH]
    if pending:
        raise ValueError(f"{src / TEXT_HASH_FILE}: the sources of {first_few(pending, show)} are marked unknown (an "
                         "update of the extraction did not finish): re-run espnet_bertkd.bin.extract_soft_labels "
                         "into it first")
    changed = [utt for (utt, t), source in zip(pairs, sources) if hashes[source].split(" ")[0] != text_hash(t)]
    if changed:
        raise ValueError(f"{text}: {len(changed)} of its {len(pairs)} utterances have another transcript than the "
                         f"one their source's soft labels in {src} were made from: {first_few(changed, show)}. "
                         "Re-run soft-label extraction for the source set with its current text (asr.sh stage 4), "
                         "or fix the copies' text")
    for name in KD_DATA_NAMES:
        check_arks(src / f"{name}.scp")  # the arks the copies will point into
    with atomic_dir(out, SHARE_OWNER, [src, text], overwrite) as tmp:
        for name in KD_DATA_NAMES:
            write_table(tmp / f"{name}.scp", ((utt, scps[name][s]) for (utt, _), s in zip(pairs, sources)))
        (tmp / META_FILE).write_bytes((src / META_FILE).read_bytes())
        write_table(tmp / TEXT_HASH_FILE, ((utt, hashes[s]) for (utt, _), s in zip(pairs, sources)))
    logging.info("%s: soft labels of %d utterances shared from %s", out, len(pairs), src)
    return len(pairs)
