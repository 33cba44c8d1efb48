"""Speed perturbation of a Kaldi data directory (ESPnet's `--speed_perturb_factors "0.9 1.0 1.1"`) without sox.

ESPnet's asr.sh stage 2 runs Kaldi's perturb_data_dir_speed.sh for each factor other than 1 and combines the copies
with the source: `data/<train>_sp` holds the source's utterances under their own ids (factor 1: the same wav.scp
entries) and, for factor F, `spF-<utt>` spoken by `spF-<spk>` (F as written: "0.9" gives `sp0.9-`), with the same
transcript. Kaldi's wav.scp then holds `sox ... speed F |` pipes, which this project does not run (no shell command
from a data file); here the perturbed audio is written to FLAC files and wav.scp lists them.

The speed change is what `sox speed F` does: the waveform is resampled by F and the sample rate kept, so pitch and
tempo change together and the duration becomes 1/F of the source's. Exactly: F is read as the fraction P/Q of its
decimal string (0.9 = 9/10) and `torchaudio.functional.resample(wave, orig_freq=P, new_freq=Q)` is applied (the
same as orig_freq=round(fs*F), new_freq=fs, which torchaudio reduces to P/Q), giving ceil(N*Q/P) samples. The
filter is torchaudio's Kaiser-windowed sinc with the "kaiser_best" settings of its resampling tutorial (width 64,
rolloff 0.9476, beta 14.77): about the bandwidth and rejection of sox's default `rate -h`, not sox's own filter, so
the samples differ from sox's by the filter's rounding, not in length or content. The result is rounded to the
source's bit depth (FLAC holds 8, 16 or 24 bits; a float or 32-bit source becomes 24-bit) and clipped there.

Work is split like every job of the project (espnet_bertkd.utils.jobs): job J of N perturbs its contiguous share of
the sorted utterances, for every factor. A file is written under a temporary name and renamed, so one that exists is
complete; a re-run keeps those whose header has the expected length and rate. `finalise` checks that every file
exists and writes the output data directory whole (atomic_dir), sorted in C order, spk2utt rebuilt, then validates
it. Segmented data directories (a `segments` file) are not supported yet.
"""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from espnet_bertkd.kd.soft_labels import strip_speed_prefix
from espnet_bertkd.tasks.data_check import ark_offset, c_sorted, is_command, spk2utt_rows, validate_data_dir
from espnet_bertkd.utils.fileio import (DataError, PathLike, atomic_dir, atomic_open, check_output_dir, first_few,
                                       location, read_dict, read_table, write_table)
from espnet_bertkd.utils.jobs import job_range
from espnet_bertkd.utils.progress import Progress

FACTOR = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
MAX_DENOMINATOR = 1000  # the filter bank has Q phases: factors with at most 3 decimals
# torchaudio's "kaiser_best" (its resampling tutorial; librosa/resampy's kaiser_best)
RESAMPLE = {"lowpass_filter_width": 64, "rolloff": 0.9475937167399596, "resampling_method": "sinc_interp_kaiser",
            "beta": 14.769656459379492}
PCM_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}
FLAC_SUBTYPE = {"PCM_S8": "PCM_S8", "PCM_U8": "PCM_S8", "PCM_16": "PCM_16", "PCM_24": "PCM_24", "PCM_32": "PCM_24",
                "FLOAT": "PCM_24", "DOUBLE": "PCM_24"}  # others (mu-law, ADPCM, ...): 16 bits
SEGMENTS_TODO = ("segmented data directories are not supported yet (the recordings would be perturbed and the "
                 "segment times divided by the factor); perturb a directory with one file per utterance")


@dataclass(frozen=True)
class Factor:
    """One speed factor: `text` as given names the copies (`sp<text>-`), `ratio` = P/Q exactly."""

    text: str
    ratio: Fraction

    @property
    def identity(self) -> bool:
        return self.ratio == 1

    @property
    def prefix(self) -> str:
        return "" if self.identity else f"sp{self.text}-"


def parse_factors(spec: str) -> List[Factor]:
    """"0.9 1.0 1.1" -> Factors; refuses what is not a positive decimal, repeats and too fine a factor."""
    factors: List[Factor] = []
    for text in spec.split():
        if not FACTOR.fullmatch(text) or Fraction(text) <= 0:
            raise DataError(f"--factors: {text!r} is not a positive decimal number such as 0.9")
        ratio = Fraction(text)
        if ratio.denominator > MAX_DENOMINATOR:
            raise DataError(f"--factors: {text}: give at most 3 decimals (the resampling filter has one phase per "
                            f"step of 1/{ratio.denominator})")
        if any(f.ratio == ratio for f in factors):
            raise DataError(f"--factors: {text} repeats a factor of {spec!r}")
        factor = Factor(text, ratio)
        assert factor.identity or strip_speed_prefix(f"{factor.prefix}x") == "x"  # what share_soft_labels strips
        factors.append(factor)
    if not factors:
        raise DataError("--factors: no factor given (e.g. --factors \"0.9 1.0 1.1\")")
    return factors


# ------------------------------------------------------------------------------------------------ audio
def perturb(wave: np.ndarray, factor: Factor) -> np.ndarray:
    """(channels, frames) float32 at any rate -> the same at speed `factor` (ceil(frames / factor) frames)."""
    import torch
    import torchaudio.functional

    out = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(wave)), factor.ratio.numerator,
                                         factor.ratio.denominator, **RESAMPLE)
    return out.numpy()


def perturbed_frames(frames: int, factor: Factor) -> int:
    """The length `perturb` gives (torchaudio: ceil(frames * Q / P))."""
    return math.ceil(frames * factor.ratio.denominator / factor.ratio.numerator)


def read_audio(path: str) -> Tuple[np.ndarray, int, str]:
    """(channels, frames) float32 in [-1, 1), the sample rate and the subtype. Integer PCM is read as integers and
    scaled by 2**-31 (libsndfile's float conversion scales reads and writes differently: no round trip)."""
    import soundfile

    info = soundfile.info(path)
    pcm = info.subtype in PCM_BITS
    data, rate = soundfile.read(path, dtype="int32" if pcm else "float32", always_2d=True)
    wave = (data.astype(np.float64) / 2.0**31).astype(np.float32) if pcm else data
    return np.ascontiguousarray(wave.T), rate, info.subtype


def write_flac(path: Path, wave: np.ndarray, rate: int, subtype: str) -> None:
    """Round (channels, frames) to `subtype`'s bits, clip there, and write FLAC atomically (temporary name, rename)."""
    import soundfile

    bits = PCM_BITS[subtype]
    full = 2.0 ** (bits - 1)
    ints = np.clip(np.rint(wave.astype(np.float64) * full), -full, full - 1).astype(np.int32)
    with atomic_open(path, "wb") as f:
        soundfile.write(f, (ints << (32 - bits)).T, rate, format="FLAC", subtype=subtype)


def is_complete(path: Path, frames: int, rate: int) -> bool:
    """An output a finished job wrote: it exists (only renamed into place when whole) with the expected header."""
    import soundfile

    if not path.is_file():
        return False
    try:
        info = soundfile.info(str(path))
    except Exception:  # soundfile raises RuntimeError/LibsndfileError/TypeError depending on the damage
        return False
    return info.frames == frames and info.samplerate == rate


# ------------------------------------------------------------------------------------------------ data directories
@dataclass
class Source:
    """The source data directory's tables, utterances in C order."""

    path: Path
    utts: List[str]
    wav: Dict[str, str]
    text: Dict[str, str]
    utt2spk: Dict[str, str]
    spk2gender: Optional[Dict[str, str]]
    wav_lines: Dict[str, int]


OWNER = "perturb_speed"  # the owner marker of the data directories written here (check_output_dir)


def check_dirs(src: PathLike, dst: PathLike, audio_dir: PathLike, overwrite: bool = False) -> None:
    """The output directory is replaced whole: it must not be the source or hold it, nor hold the audio, nor (unless
    `overwrite`) be a directory this tool did not make. Checked by every job, before its work."""
    src_r, dst_r, audio_r = (Path(p).resolve() for p in (src, dst, audio_dir))
    if dst_r == src_r or dst_r in src_r.parents:
        raise DataError(f"--dst {dst}: is {'the source' if dst_r == src_r else 'a parent of the source'} {src}, "
                        "which writing it would replace: choose another directory (e.g. data/<train>_sp)")
    if audio_r == dst_r or dst_r in audio_r.parents:
        raise DataError(f"--audio_dir {audio_dir}: inside --dst {dst}, which is rewritten whole: put the audio "
                        "elsewhere (e.g. dump/audio/<train>_sp)")
    check_output_dir(dst, OWNER, overwrite=overwrite, option="--dst")


def read_source(src: PathLike, factors: Sequence[Factor]) -> Source:
    """Validate and read the source directory; refuse segments, and audio entries that are no files where a factor
    other than 1 has to read them."""
    path = Path(src)
    if (path / "segments").is_file():
        raise DataError(f"{path / 'segments'}: {SEGMENTS_TODO}")
    validate_data_dir(path, require_text=True, allow_empty_text=True)
    entries = read_table(path / "wav.scp")
    source = Source(path, c_sorted(e.key for e in entries), {e.key: e.value for e in entries},
                    read_dict(path / "text"), read_dict(path / "utt2spk"),
                    read_dict(path / "spk2gender") if (path / "spk2gender").is_file() else None,
                    {e.key: e.line for e in entries})
    if any(not f.identity for f in factors):
        problems = [f"{location(path / 'wav.scp', e.line, e.key)}: {reason}" for e in entries
                    if (reason := not_a_file(e.value))]
        if problems:
            raise DataError(problems, hint="speed perturbation reads audio files (FLAC, WAV, ...) itself")
    bad = [u for u in source.utts if "/" in u or u.startswith(".")] + \
          [s for s in sorted(set(source.utt2spk.values())) if "/" in s or s.startswith(".")]
    if bad:
        raise DataError(f"{path}: ids that cannot name a file (a '/' or a leading '.'): {first_few(bad)}")
    return source


def not_a_file(value: str) -> str:
    """Why an audio entry cannot be read as a file ("" if it can)."""
    if is_command(value):
        return (f"audio entry is a command ({value!r}): this tool runs no command from a data file; convert the "
                "audio to files first and list the files")
    if not Path(value).is_file() and ark_offset(value)[1] is not None:
        return f"audio entry is an ark offset ({value!r}): list audio files instead"
    return ""


def audio_path(audio_dir: PathLike, factor: Factor, speaker: str, utt: str) -> Path:
    """Where the copy of `utt` at `factor` goes: AUDIO_DIR/sp<F>/<source speaker>/sp<F>-<utt>.flac (one folder per
    speaker keeps directories small)."""
    return Path(os.path.abspath(audio_dir)) / f"sp{factor.text}" / speaker / f"{factor.prefix}{utt}.flac"


def perturb_utterance(source: Source, utt: str, factors: Sequence[Factor], audio_dir: PathLike) -> int:
    """Write the copies of `utt` that are not complete yet; returns how many were written."""
    import soundfile

    value = source.wav[utt]
    try:
        info = soundfile.info(value)
        todo = [f for f in factors if not is_complete(audio_path(audio_dir, f, source.utt2spk[utt], utt),
                                                       perturbed_frames(info.frames, f), info.samplerate)]
        if not todo:
            return 0
        wave, rate, subtype = read_audio(value)
    except Exception as err:  # soundfile raises RuntimeError/LibsndfileError/TypeError depending on the file
        raise DataError(f"{location(source.path / 'wav.scp', source.wav_lines[utt], utt)}: cannot read {value}: "
                        f"{err}") from None
    for factor in todo:
        write_flac(audio_path(audio_dir, factor, source.utt2spk[utt], utt), perturb(wave, factor), rate,
                   FLAC_SUBTYPE.get(subtype, "PCM_16"))
    return len(todo)


def run_job(src: PathLike, dst: PathLike, audio_dir: PathLike, factors: Sequence[Factor], nj: int = 1,
            job: int = 1, overwrite: bool = False) -> Tuple[int, int]:
    """Perturb job `job`'s share of the utterances (job_range over the sorted ids) for every factor but 1.
    Returns (files written, files already complete)."""
    check_dirs(src, dst, audio_dir, overwrite)
    source = read_source(src, factors)
    moving = [f for f in factors if not f.identity]
    utts = [source.utts[i] for i in job_range(len(source.utts), nj, job)]
    written = 0
    with Progress(len(utts), f"speed perturbation job {job}/{nj}", unit="utt") as bar:
        for utt in utts:
            written += perturb_utterance(source, utt, moving, audio_dir)
            bar.update()
    kept = len(utts) * len(moving) - written
    logging.info("job %d/%d: %d files written, %d already complete (%d utterances x factors %s)", job, nj, written,
                 kept, len(utts), " ".join(f.text for f in moving))
    return written, kept


def job_of(index: int, total: int, nj: int) -> int:
    """The job (1-based) whose share holds utterance number `index`."""
    return next(j for j in range(1, nj + 1) if index in job_range(total, nj, j))


def output_tables(source: Source, factors: Sequence[Factor], audio_dir: PathLike) -> Dict[str, Dict[str, str]]:
    """wav.scp, text, utt2spk (and spk2gender) of the perturbed directory: factor 1 keeps the source's entries."""
    tables: Dict[str, Dict[str, str]] = {"wav.scp": {}, "text": {}, "utt2spk": {}}
    origin: Dict[str, str] = {}
    clashes = []
    for factor in factors:
        for utt in source.utts:
            new = factor.prefix + utt
            if new in origin:
                clashes.append(f"{new} (factor {factor.text} of {utt}, and {origin[new]})")
                continue
            origin[new] = f"factor {factor.text} of {utt}"
            speaker = source.utt2spk[utt]
            tables["wav.scp"][new] = (source.wav[utt] if factor.identity
                                      else str(audio_path(audio_dir, factor, speaker, utt)))
            tables["text"][new] = source.text[utt]
            tables["utt2spk"][new] = factor.prefix + speaker
    if clashes:
        raise DataError(f"{source.path}: the copies' ids clash: {first_few(clashes, fmt=str)} (the source already "
                        "holds speed-perturbed ids)")
    if source.spk2gender is not None:
        tables["spk2gender"] = {f.prefix + s: g for f in factors for s, g in source.spk2gender.items()}
    return tables


def finalise(src: PathLike, dst: PathLike, audio_dir: PathLike, factors: Sequence[Factor],
             nj: int = 1, overwrite: bool = False) -> Tuple[int, int]:
    """After every job: check that each perturbed file exists (naming the jobs to re-run), then write DST whole
    (C order, spk2utt rebuilt) and validate it. Returns (utterances, speakers)."""
    check_dirs(src, dst, audio_dir, overwrite)
    source = read_source(src, factors)
    missing: List[str] = []
    jobs = set()
    for i, utt in enumerate(source.utts):
        for factor in (f for f in factors if not f.identity):
            if not audio_path(audio_dir, factor, source.utt2spk[utt], utt).is_file():
                missing.append(factor.prefix + utt)
                jobs.add(job_of(i, len(source.utts), nj))
    if missing:
        raise DataError(f"{audio_dir}: {len(missing)} perturbed files are missing ({first_few(missing, fmt=str)}): "
                        f"re-run job(s) {', '.join(map(str, sorted(jobs)))} of --nj {nj} (--job J), then --finalise")
    tables = output_tables(source, factors, audio_dir)
    skipped = sorted(n for n in ("utt2dur", "utt2num_samples", "utt2category", "utt2lang", "utt2uniq")
                     if (source.path / n).is_file())
    if skipped:
        logging.warning("%s: %s not carried over to %s", source.path, ", ".join(skipped), dst)
    with atomic_dir(dst, OWNER, [src, audio_dir], overwrite) as tmp:
        for name, table in tables.items():
            write_table(tmp / name, ((k, table[k]) for k in c_sorted(table)))
        write_table(tmp / "spk2utt", spk2utt_rows(tables["utt2spk"].items()))
    report = validate_data_dir(dst, require_text=True, allow_empty_text=True)
    logging.info("%s: %d utterances, %d speakers (factors %s of %s)", dst, report.utterances, report.speakers,
                 " ".join(f.text for f in factors), src)
    return report.utterances, report.speakers
