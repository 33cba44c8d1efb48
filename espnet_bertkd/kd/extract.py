"""Cached teacher mode: write soft labels for an ESPnet `text` file as kaldiio ark/scp.

Layout of OUTPUT_DIR (what the data loader reads is `kd_token.scp` and `kd_prob.scp`):

    kd_token.scp, kd_prob.scp, kd_meta.json      merged result (written last, atomically)
    split{nj}/{job}/{name}.{chunk}.ark|scp        per-job chunks; a chunk's scp exists only once it is complete

Jobs split the utterances into contiguous parts and can run in parallel (one process each, `--job J`). Killing a
job loses at most the chunk it was writing: re-running skips finished chunks. The job that finds every chunk done
merges the scps (they point into the chunk arks, nothing is copied).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import kaldiio
import numpy as np

from espnet_bertkd.kd.soft_labels import KD_DATA_NAMES, KD_PROB, KD_TOKEN, STORAGE, pack, read_meta, write_meta
from espnet_bertkd.kd.teacher_config import TeacherConfig
from espnet_bertkd.kd.soft_labels import SoftLabels
from espnet_bertkd.kd.teacher import MaskedLMTeacher, log_teacher
from espnet_bertkd.utils.fileio import atomic_open, read_dict, read_pairs
from espnet_bertkd.utils.jobs import job_range  # chunks are named by (nj, job): keep this split convention
from espnet_bertkd.utils.progress import Progress


def read_text(path: str) -> List[Tuple[str, str]]:
    """(utt_id, transcript) pairs of an ESPnet/Kaldi `text` file; an utterance id alone means an empty transcript.
    Read by fileio.read_table, as the preflight, teacher_accuracy and the scorer read it (DataError on a blank line,
    a duplicate id, DOS line endings, ...)."""
    return read_pairs(path)


def read_utt2spk(path: str) -> Dict[str, str]:
    return read_dict(path)


def neighbour_contexts(
    pairs: Sequence[Tuple[str, str]], utt2group: Optional[Dict[str, str]], width: int
) -> Tuple[List[str], List[str]]:
    """Left/right context for each utterance: up to `width` neighbouring transcripts of the same group (speaker or
    chapter; in ESPnet's LibriSpeech data the "speaker" is reader-chapter), in utterance-id order."""
    if width <= 0:
        return [""] * len(pairs), [""] * len(pairs)
    groups: Dict[str, List[int]] = {}
    for i, (utt, _) in enumerate(pairs):
        key = utt2group.get(utt, utt) if utt2group is not None else utt.rsplit("-", 1)[0]
        groups.setdefault(key, []).append(i)
    left, right = [""] * len(pairs), [""] * len(pairs)
    for members in groups.values():
        members = sorted(members, key=lambda i: pairs[i][0])
        for pos, i in enumerate(members):
            left[i] = " ".join(pairs[j][1] for j in members[max(0, pos - width) : pos])
            right[i] = " ".join(pairs[j][1] for j in members[pos + 1 : pos + 1 + width])
    return left, right


def chunk_paths(out_dir: Path, nj: int, job: int, chunk: int, name: str) -> Tuple[Path, Path]:
    folder = out_dir / f"split{nj}" / str(job)
    return folder / f"{name}.{chunk}.ark", folder / f"{name}.{chunk}.scp"


def _chunks(indices: range, size: int) -> Iterator[Tuple[int, range]]:
    for c, start in enumerate(range(indices.start, indices.stop, size)):
        yield c, range(start, min(start + size, indices.stop))


def check_finite(utt_ids: Sequence[str], labels: Sequence[SoftLabels], dtype: str, show: int = 5) -> None:
    """Refuse to store NaN/inf probabilities (a float16 teacher can overflow), naming the utterances; the chunk is
    not written, so the chunks written before it are kept and a re-run resumes there."""
    bad = [u for u, lab in zip(utt_ids, labels) if not np.isfinite(lab.topk_probs).all()]
    if bad:
        more = f" and {len(bad) - show} more" if len(bad) > show else ""
        raise ValueError(
            f"the teacher gave non-finite probabilities for utterance(s) {', '.join(map(repr, bad[:show]))}{more} "
            f"with teacher.dtype={dtype}: use float32 (or bfloat16, which has float32's range); the chunks already "
            "written are kept and a re-run resumes after them"
        )


def run_job(
    teacher: MaskedLMTeacher,
    pairs: Sequence[Tuple[str, str]],
    contexts: Tuple[List[str], List[str]],
    out_dir: Path,
    nj: int,
    job: int,
    chunk_size: int,
) -> int:
    """Extract one job's chunks, skipping finished ones; returns how many utterances were scored now."""
    scored = 0
    chunks = list(_chunks(job_range(len(pairs), nj, job), chunk_size))
    todo = [(c, r) for c, r in chunks if not all(chunk_paths(out_dir, nj, job, c, n)[1].exists() for n in KD_DATA_NAMES)]
    if len(todo) < len(chunks):
        logging.info("job %d/%d: %d of %d chunks already done", job, nj, len(chunks) - len(todo), len(chunks))
    bar = Progress(sum(len(r) for _, r in todo), f"soft labels job {job}/{nj}", unit="utt")
    for c, r in todo:
        labels = teacher.soft_labels(
            [pairs[i][1] for i in r], [contexts[0][i] for i in r], [contexts[1][i] for i in r]
        )
        check_finite([pairs[i][0] for i in r], labels, teacher.config.dtype)
        arrays = {KD_TOKEN: {}, KD_PROB: {}}
        for i, lab in zip(r, labels):
            tokens, probs = pack(lab, teacher.vocab_size)
            arrays[KD_TOKEN][pairs[i][0]] = tokens
            arrays[KD_PROB][pairs[i][0]] = probs
        for name in KD_DATA_NAMES:
            ark, scp = chunk_paths(out_dir, nj, job, c, name)
            ark.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(scp) as scp_file:  # the scp marks the chunk complete
                kaldiio.save_ark(str(ark), arrays[name], scp=scp_file)  # Kaldi float32 matrices
        scored += len(r)
        bar.update(len(r))
    bar.close()
    return scored


def merge(out_dir: Path, n_utts: int, nj: int, chunk_size: int) -> bool:
    """Concatenate every chunk's scp into OUTPUT_DIR/{name}.scp once all chunks of all jobs exist."""
    parts: Dict[str, List[Path]] = {name: [] for name in KD_DATA_NAMES}
    for job in range(1, nj + 1):
        for c, _ in _chunks(job_range(n_utts, nj, job), chunk_size):
            for name in KD_DATA_NAMES:
                scp = chunk_paths(out_dir, nj, job, c, name)[1]
                if not scp.exists():
                    return False
                parts[name].append(scp)
    for name, scps in parts.items():
        with atomic_open(out_dir / f"{name}.scp") as out:
            for scp in scps:
                out.write(scp.read_text(encoding="utf-8"))
    return True


def extract(
    text: str,
    out_dir: str,
    config: TeacherConfig,
    nj: int = 1,
    job: Optional[int] = None,
    context_utterances: int = 0,
    utt2spk: Optional[str] = None,
    chunk_size: int = 500,
    device: str = "cpu",
) -> bool:
    """Run job `job` (or all jobs when None) and merge if everything is done; returns whether merged."""
    if job is not None and not 1 <= job <= nj:
        raise ValueError(f"--job must be in 1..{nj}, got {job}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs = read_text(text)
    teacher = MaskedLMTeacher(config, device=device)
    log_teacher(teacher)
    meta = {**teacher.metadata(), "storage": STORAGE, "dtype": config.dtype, "max_length": config.max_length,
            "context_utterances": context_utterances, "text": os.path.abspath(text),
            "num_utterances": len(pairs), "nj": nj, "chunk_size": chunk_size}
    previous = read_meta(out)
    if previous is not None and {k: previous.get(k) for k in meta} != meta:
        changed = sorted(k for k in meta if previous.get(k) != meta[k])
        raise ValueError(
            f"{out} holds soft labels made with other settings ({', '.join(changed)} differ): "
            "remove the directory or choose another --output_dir"
        )
    write_meta(out, meta)
    contexts = neighbour_contexts(pairs, read_utt2spk(utt2spk) if utt2spk else None, context_utterances)
    for j in [job] if job is not None else range(1, nj + 1):
        scored = run_job(teacher, pairs, contexts, out, nj, j, chunk_size)
        logging.info("job %d/%d: scored %d utterances", j, nj, scored)
    merged = merge(out, len(pairs), nj, chunk_size)
    if merged:
        logging.info("wrote %s and %s for %d utterances", out / f"{KD_TOKEN}.scp", out / f"{KD_PROB}.scp", len(pairs))
    return merged
