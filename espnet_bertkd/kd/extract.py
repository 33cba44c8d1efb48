"""Cached teacher mode: write soft labels for an ESPnet `text` file as kaldiio ark/scp.

Layout of OUTPUT_DIR (what the data loader reads is `kd_token.scp` and `kd_prob.scp`):

    kd_token.scp, kd_prob.scp, kd_meta.json      merged result (written atomically)
    kd_text.hash                                  what each utterance's labels were made from (written last)
    split{nj}/{job}/{name}.{chunk}.ark|scp        per-job chunks; a chunk's scp exists only once it is complete
    split{nj}/{job}/kd_text.{chunk}.hash          the chunk's fingerprints: written after its scps, marks it done
    update/{tag}/split{nj}/{job}/...              chunks of a re-run that recomputed changed utterances

Jobs split the utterances into contiguous parts and can run in parallel (one process each, `--job J`). Killing a
job loses at most the chunk it was writing: re-running redoes only the chunks that are not verifiably done (scps,
fingerprints of the same transcripts, arks that exist and hold every entry). The job that finds every chunk done
merges the scps (they point into the chunk arks, nothing is copied).

Re-running on a finished directory is a fast no-op when the transcripts are unchanged; otherwise it recomputes only
the utterances whose transcript (or context) changed, that are new, or whose ark went missing (in parallel jobs
too, under update/{tag}), and rewrites the scps and kd_text.hash atomically, for the utterances of --text only.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import kaldiio
import numpy as np

from espnet_bertkd.kd.soft_labels import (
    KD_DATA_NAMES, KD_PROB, KD_TOKEN, META_FILE, STORAGE, TEXT_FINGERPRINT, TEXT_HASH_FILE, UNKNOWN_HASH, SoftLabels,
    fingerprint, pack, read_meta, read_text_hashes, unreadable_entries, write_meta,
)
from espnet_bertkd.kd.teacher import MaskedLMTeacher, check_unknown_tokens, log_teacher
from espnet_bertkd.kd.teacher_config import TeacherConfig
from espnet_bertkd.utils.fileio import (atomic_open, check_output_dir, first_few, read_dict, read_pairs, read_table,
                                       write_table)
from espnet_bertkd.utils.jobs import job_range  # chunks are named by (nj, job): keep this split convention
from espnet_bertkd.utils.progress import Progress


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


def chunk_hash_path(out_dir: Path, nj: int, job: int, chunk: int) -> Path:
    return out_dir / f"split{nj}" / str(job) / f"kd_text.{chunk}.hash"


def chunk_done(out_dir: Path, nj: int, job: int, chunk: int, rows: Sequence[Tuple[str, str]]) -> bool:
    """A chunk is done when its scps exist, its fingerprint file lists exactly these (utt, fingerprint) rows, and
    every ark its scps name exists and holds every entry (a deleted or truncated ark is redone)."""
    marker = chunk_hash_path(out_dir, nj, job, chunk)
    scps = [chunk_paths(out_dir, nj, job, chunk, name)[1] for name in KD_DATA_NAMES]
    if not marker.exists() or not all(scp.exists() for scp in scps):
        return False
    try:
        if [(e.key, e.value) for e in read_table(marker)] != list(rows):
            return False
        return not any(unreadable_entries(scp) for scp in scps)
    except ValueError:  # a damaged marker or scp: redo the chunk
        return False


def _chunks(indices: range, size: int) -> Iterator[Tuple[int, range]]:
    for c, start in enumerate(range(indices.start, indices.stop, size)):
        yield c, range(start, min(start + size, indices.stop))


def check_finite(utt_ids: Sequence[str], labels: Sequence[SoftLabels], dtype: str, show: int = 5) -> None:
    """Refuse to store NaN/inf probabilities (a float16 teacher can overflow), naming the utterances; the chunk is
    not written, so the chunks written before it are kept and a re-run resumes there."""
    bad = [u for u, lab in zip(utt_ids, labels) if not np.isfinite(lab.topk_probs).all()]
    if bad:
        raise ValueError(
            f"the teacher gave non-finite probabilities for utterance(s) {first_few(bad, show)} "
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
    prints: Optional[Sequence[str]] = None,
) -> int:
    """Extract one job's chunks, skipping verifiably finished ones (chunk_done); returns how many utterances were
    scored now. `prints` are the utterances' kd_text.hash values (default: their text hashes)."""
    if prints is None:
        prints = [fingerprint(t) for _, t in pairs]
    scored = 0
    chunks = list(_chunks(job_range(len(pairs), nj, job), chunk_size))
    todo = [(c, r) for c, r in chunks
            if not chunk_done(out_dir, nj, job, c, [(pairs[i][0], prints[i]) for i in r])]
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
            with atomic_open(scp) as scp_file:
                kaldiio.save_ark(str(ark), arrays[name], scp=scp_file)  # Kaldi float32 matrices
        # written last, the fingerprints mark the chunk complete
        write_table(chunk_hash_path(out_dir, nj, job, c), [(pairs[i][0], prints[i]) for i in r])
        scored += len(r)
        bar.update(len(r))
    bar.close()
    return scored


def chunk_lines(out_dir: Path, n_utts: int, nj: int, chunk_size: int) -> Optional[Dict[str, List[str]]]:
    """The scp lines (per name) and fingerprint lines of every chunk, in utterance order, once all chunks of all jobs
    are marked done; None while one is missing (another job is still running)."""
    parts: Dict[str, List[str]] = {name: [] for name in (*KD_DATA_NAMES, TEXT_HASH_FILE)}
    for job in range(1, nj + 1):
        for c, _ in _chunks(job_range(n_utts, nj, job), chunk_size):
            files = {name: chunk_paths(out_dir, nj, job, c, name)[1] for name in KD_DATA_NAMES}
            files[TEXT_HASH_FILE] = chunk_hash_path(out_dir, nj, job, c)
            if not all(f.exists() for f in files.values()):
                return None
            broken = [problem for name in KD_DATA_NAMES for problem in unreadable_entries(files[name])]
            if broken:  # its ark was deleted or cut after the chunk was written: its job redoes it when re-run
                utt, ark, why = broken[0]
                logging.warning("chunk %d of job %d/%d is not merged: %s %s (utterance %s); re-run job %d to redo it",
                                c, job, nj, ark, why, utt, job)
                return None
            for name, f in files.items():
                parts[name] += f.read_text(encoding="utf-8").splitlines(keepends=True)
    return parts


def write_merged(out_dir: Path, lines: Dict[str, List[str]], stale: Sequence[str] = ()) -> None:
    """Write the merged scps, then kd_text.hash. Where `stale` utterances change, kd_text.hash first marks them
    unknown, so that a crash between the files leaves them to be redone, never trusted."""
    hash_file = out_dir / TEXT_HASH_FILE
    if stale and hash_file.exists():
        unknown = set(stale)
        with atomic_open(hash_file) as out:
            for line in lines[TEXT_HASH_FILE]:
                utt = line.split(" ", 1)[0].rstrip("\n")
                out.write(f"{utt} {UNKNOWN_HASH}\n" if utt in unknown else line)
    for name in (*KD_DATA_NAMES, TEXT_HASH_FILE):
        with atomic_open(out_dir / (name if name == TEXT_HASH_FILE else f"{name}.scp")) as out:
            out.writelines(lines[name])


def merge(out_dir: Path, n_utts: int, nj: int, chunk_size: int) -> bool:
    """Concatenate every chunk's scp into OUTPUT_DIR/{name}.scp once all chunks of all jobs exist."""
    lines = chunk_lines(out_dir, n_utts, nj, chunk_size)
    if lines is None:
        return False
    write_merged(out_dir, lines)
    return True


def read_merged(out_dir: Path) -> Optional[Tuple[Dict[str, Dict[str, str]], Dict[str, str], set]]:
    """A finished extraction in OUTPUT_DIR: (scp line per name and utterance, kd_text.hash values, utterances whose
    arks are missing or short); None where kd_text.hash or a scp is missing (not finished, or written by a version
    without fingerprints: everything is recomputed, chunk by chunk)."""
    scps = {name: out_dir / f"{name}.scp" for name in KD_DATA_NAMES}
    try:
        hashes = read_text_hashes(out_dir) if all(p.exists() for p in scps.values()) else None
        if hashes is None:
            return None
        lines: Dict[str, Dict[str, str]] = {}
        for name, path in scps.items():
            lines[name] = {e.key: f"{e.key} {e.value}\n" for e in read_table(path)}
        broken = {utt for path in scps.values() for utt, _, _ in unreadable_entries(path)}
    except ValueError as e:  # a damaged merged file: rebuild it from the (verified) chunks
        logging.warning("%s: the merged soft labels cannot be read (%s): rebuilding them from the chunks", out_dir,
                        str(e).splitlines()[0])
        return None
    return lines, hashes, broken


def update(teacher: MaskedLMTeacher, pairs: Sequence[Tuple[str, str]], prints: Sequence[str],
           contexts: Tuple[List[str], List[str]], out: Path, merged, nj: int, jobs: Sequence[int],
           chunk_size: int) -> bool:
    """Bring a finished extraction up to date with `pairs`: recompute the utterances whose fingerprint changed, that
    are missing or whose arks are broken (chunked and split into jobs like a first run, under update/{tag}), then
    rewrite the scps for exactly these utterances. Returns whether merged (False while other jobs still run)."""
    lines, hashes, broken = merged
    stale = [i for i, (utt, _) in enumerate(pairs)
             if hashes.get(utt) != prints[i] or utt in broken or any(utt not in lines[n] for n in KD_DATA_NAMES)]
    order = [utt for utt, _ in pairs]
    if not stale and all(list(lines[n]) == order for n in KD_DATA_NAMES) and list(hashes) == order:
        logging.info("%s is up to date: the soft labels of all %d utterances match the transcripts", out, len(pairs))
        return True
    logging.info("%s: %d of %d utterances changed, are new or lost their arks: recomputing them", out, len(stale),
                 len(pairs))
    tag = hashlib.blake2b(f"{nj} {chunk_size}\n".encode(), digest_size=8)
    for i in stale:
        tag.update(f"{pairs[i][0]} {prints[i]}\n".encode("utf-8"))
    work = out / "update" / tag.hexdigest()
    sub_pairs = [pairs[i] for i in stale]
    sub_contexts = ([contexts[0][i] for i in stale], [contexts[1][i] for i in stale])
    sub_prints = [prints[i] for i in stale]
    for j in jobs:
        scored = run_job(teacher, sub_pairs, sub_contexts, work, nj, j, chunk_size, sub_prints)
        logging.info("job %d/%d: scored %d utterances", j, nj, scored)
    new = chunk_lines(work, len(sub_pairs), nj, chunk_size)
    if new is None:
        return False
    fresh = {name: {line.split(maxsplit=1)[0]: line for line in new[name]} for name in KD_DATA_NAMES}
    result = {name: [fresh[name].get(utt) or lines[name][utt] for utt in order] for name in KD_DATA_NAMES}
    result[TEXT_HASH_FILE] = [f"{utt} {p}\n" for utt, p in zip(order, prints)]
    write_merged(out, result, stale=[pairs[i][0] for i in stale])
    return True


# kd_meta.json keys that may differ on a re-run: the data (handled utterance by utterance) and the job layout.
NOT_COMPARED = ("num_utterances", "nj", "chunk_size", "text_fingerprints")


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
    """Run job `job` (or all jobs when None) and merge if everything is done; returns whether merged. On a finished
    directory: recompute what changed (see the module docstring)."""
    if job is not None and not 1 <= job <= nj:
        raise ValueError(f"--job must be in 1..{nj}, got {job}")
    out = Path(out_dir)
    # before the teacher is loaded: a file, or a directory holding other files than an extraction's (kd_meta.json
    # is written first, so a job started beside another finds it) and the jobs' logs (asr.sh's OUTPUT/log/)
    check_output_dir(out, "extract_soft_labels", own_files=(META_FILE,), ignore=("log",))
    pairs = read_pairs(text)  # (utt, transcript); fileio.read_table's checks, as every stage reads `text`
    teacher = MaskedLMTeacher(config, device=device)
    log_teacher(teacher)
    check_unknown_tokens(config.model, teacher.tokenizer, pairs, text)
    meta = {**teacher.metadata(), "storage": STORAGE, "dtype": config.dtype, "max_length": config.max_length,
            "context_utterances": context_utterances, "text": os.path.abspath(text),
            "num_utterances": len(pairs), "nj": nj, "chunk_size": chunk_size, "text_fingerprints": TEXT_FINGERPRINT}
    previous = read_meta(out)
    compared = [k for k in meta if k not in NOT_COMPARED]
    if previous is not None and any(previous.get(k) != meta[k] for k in compared):
        changed = sorted(k for k in compared if previous.get(k) != meta[k])
        raise ValueError(
            f"{out} holds soft labels made with other settings ({', '.join(changed)} differ): "
            "remove the directory or choose another --output_dir"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_meta(out, meta)
    contexts = neighbour_contexts(pairs, read_dict(utt2spk) if utt2spk else None, context_utterances)
    prints = [fingerprint(t, left, right, context_utterances > 0) for (_, t), left, right in zip(pairs, *contexts)]
    jobs = [job] if job is not None else range(1, nj + 1)
    merged = read_merged(out)
    if merged is not None:
        return update(teacher, pairs, prints, contexts, out, merged, nj, jobs, chunk_size)
    for j in jobs:
        scored = run_job(teacher, pairs, contexts, out, nj, j, chunk_size, prints)
        logging.info("job %d/%d: scored %d utterances", j, nj, scored)
    merged = merge(out, len(pairs), nj, chunk_size)
    if merged:
        logging.info("wrote %s and %s for %d utterances", out / f"{KD_TOKEN}.scp", out / f"{KD_PROB}.scp", len(pairs))
    return merged
