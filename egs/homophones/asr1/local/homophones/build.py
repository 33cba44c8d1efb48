"""Generate the whole synthetic corpus into a directory: plan (text, speakers, utterances), synthesise, write.

Why planning is separate from synthesis: the plan is a cheap, pure function of the options (every utterance gets its
own derived seed), so synthesis can run in any number of processes, in any order, and resume after an interruption,
always producing the same files. Re-running a finished corpus with the same options touches nothing.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from homophones import librispeech_layout as layout
from homophones import speech, voices
from homophones.config import CorpusConfig, describe_difference, options_hash, options_record
from homophones.lexicon import HOMOPHONE_SETS
from homophones.text import CorpusText, generate_text, sub_seed

logger = logging.getLogger(__name__)

# Speaker ids per set start here (LibriSpeech-like small integers that also tell the set apart).
SPEAKER_ID_BASE: Dict[str, int] = {
    "dev-clean": 1000, "test-clean": 2000, "dev-other": 3000, "test-other": 4000, "train-clean": 5000,
}
ACOUSTICS = {"clean": speech.CLEAN, "other": speech.OTHER}
STYLES = {"clean": voices.CLEAN_STYLE, "other": voices.OTHER_STYLE}


class CorpusOptionsError(ValueError):
    """The output directory holds (part of) a corpus generated with different options."""


@dataclass(frozen=True)
class UttJob:
    """Everything needed to synthesise and write one utterance (picklable, for worker processes)."""

    set_name: str
    utt_id: str
    path: str
    text: str
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    condition: str
    audio_seed: int


@dataclass
class CorpusPlan:
    config: CorpusConfig
    text: CorpusText
    jobs: List[UttJob]
    speakers: Dict[str, List[voices.Speaker]]
    chapters: Dict[Tuple[str, int, int], List[Tuple[str, str]]] = field(default_factory=dict)


def plan_corpus(config: CorpusConfig, root: Path) -> CorpusPlan:
    """Sentences, speakers, chapters and per-utterance synthesis parameters; no audio."""
    specs = config.sets()
    text = generate_text(
        config.seed, {s.name: s.num_utts for s in specs}, [s.name for s in specs if s.is_train],
        lm_ratio=config.lm_ratio, lm_only_fraction=config.lm_only_fraction,
    )
    jobs: List[UttJob] = []
    speakers: Dict[str, List[voices.Speaker]] = {}
    chapters: Dict[Tuple[str, int, int], List[Tuple[str, str]]] = {}
    for spec in specs:
        n_spk = voices.num_speakers_for(spec.num_utts, spec.utts_per_speaker)
        base = SPEAKER_ID_BASE[spec.name]
        if spec.name != "train-clean" and n_spk >= 1000:
            raise ValueError(f"{spec.name}: {n_spk} speakers do not fit the id range {base}..{base + 999}")
        spk_rng = random.Random(sub_seed(config.seed, "speakers", spec.name))
        set_speakers = voices.plan_speakers(spk_rng, spec.voice_pool, n_spk, base, STYLES[spec.condition],
                                            voices.VOICE_SETS[config.voices])
        speakers[spec.name] = set_speakers
        sentences = text.sets[spec.name]
        # Deal sentences to speakers in contiguous blocks of (almost) equal size, then cut chapters.
        bounds = np.linspace(0, len(sentences), n_spk + 1).round().astype(int)
        for spk, lo, hi in zip(set_speakers, bounds[:-1], bounds[1:]):
            for k, start in enumerate(range(lo, hi, config.utts_per_chapter), start=1):
                chapter = spk.speaker_id * 100 + k
                block = sentences[start:min(hi, start + config.utts_per_chapter)]
                lines = chapters.setdefault((spec.name, spk.speaker_id, chapter), [])
                for i, sentence in enumerate(block):
                    uid = layout.utt_id(spk.speaker_id, chapter, i)
                    rate, pitch, prange = voices.utterance_params(
                        random.Random(sub_seed(config.seed, "utt-params", uid)), spk, STYLES[spec.condition]
                    )
                    jobs.append(UttJob(
                        set_name=spec.name, utt_id=uid,
                        path=str(layout.flac_path(root, spec.name, spk.speaker_id, chapter, i)),
                        text=sentence, voice=spk.voice, rate=rate, pitch=pitch, pitch_range=prange,
                        condition=spec.condition, audio_seed=sub_seed(config.seed, "audio", uid),
                    ))
                    lines.append((uid, sentence))
    return CorpusPlan(config=config, text=text, jobs=jobs, speakers=speakers, chapters=chapters)


def synthesize_job(job: UttJob) -> np.ndarray:
    """The audio of one planned utterance (float32, 16 kHz)."""
    rng = np.random.default_rng(job.audio_seed)
    return speech.render(job.text, job.voice, job.rate, job.pitch, job.pitch_range, rng, ACOUSTICS[job.condition])


def _run_batch(batch: Sequence[UttJob]) -> List[Tuple[str, int]]:
    out = []
    for job in batch:
        audio = synthesize_job(job)
        layout.atomic_write_flac(Path(job.path), audio, speech.SAMPLE_RATE)
        out.append((job.utt_id, len(audio)))
    return out


def _synthesize_all(jobs: List[UttJob], nj: int, progress: bool) -> Dict[str, int]:
    """Write every job's FLAC; returns utt_id -> number of samples."""
    from tqdm import tqdm

    samples: Dict[str, int] = {}
    batches = [jobs[i:i + 16] for i in range(0, len(jobs), 16)]
    with tqdm(total=len(jobs), desc="synthesising", unit="utt", disable=not progress) as bar:
        if nj <= 1 or len(batches) <= 1:
            for batch in batches:
                samples.update(_run_batch(batch))
                bar.update(len(batch))
        else:
            # fork: workers inherit the imported modules (the espnet_bertkd package import is slow); each worker
            # builds its own eSpeak engine (speech.engine() checks the pid).
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            with multiprocessing.get_context(method).Pool(nj) as pool:
                for result in pool.imap_unordered(_run_batch, batches):
                    samples.update(result)
                    bar.update(len(result))
    return samples


def _remove_stale_temporaries(root: Path, set_names: Sequence[str]) -> None:
    """Delete '.<name>.<random>.tmp' files an interrupted run left behind."""
    for name in set_names:
        for p in (root / name).rglob(".*.tmp") if (root / name).is_dir() else ():
            p.unlink()


def _check_options(root: Path, record: Dict[str, object], digest: str) -> Optional[Dict[str, object]]:
    """Returns the stored info if the corpus is already complete with these options; raises on other options."""
    for marker in (layout.DONE_MARKER, layout.OPTIONS_MARKER):
        path = root / marker
        if path.is_file():
            stored = layout.read_json(path)
            if stored.get("hash") != digest:
                raise CorpusOptionsError(
                    f"{root} already holds a corpus generated with different options "
                    f"({describe_difference(stored.get('record', {}), record)}); "
                    f"use another --output_dir or delete this one"
                )
    if (root / layout.DONE_MARKER).is_file() and (root / layout.INFO_JSON).is_file():
        return layout.read_json(root / layout.INFO_JSON)
    return None


def make_corpus(output_dir: str, config: CorpusConfig, nj: int = 1, progress: bool = True) -> Dict[str, object]:
    """Generate (or finish, or confirm) the corpus in `output_dir`; returns the summary also written to
    corpus_info.json."""
    start = time.time()
    root = Path(output_dir)
    engine = speech.engine()
    record = options_record(config, engine.version)
    digest = options_hash(record)
    done = _check_options(root, record, digest)
    if done is not None:
        logger.info("%s is complete (options hash %s): nothing to do", root, digest)
        return done
    root.mkdir(parents=True, exist_ok=True)
    if not (root / layout.OPTIONS_MARKER).is_file():
        layout.write_json(root / layout.OPTIONS_MARKER, {"hash": digest, "record": record})

    plan = plan_corpus(config, root)
    for voice in sorted({j.voice for j in plan.jobs}):
        engine.check_voice(voice)
    layout.write_text_if_changed(root / layout.LM_TEXT, layout.lm_text(plan.text.lm))

    specs = config.sets()
    _remove_stale_temporaries(root, [s.name for s in specs])
    todo = [j for j in plan.jobs if not os.path.isfile(j.path)]
    logger.info("%d of %d utterances to synthesise (nj=%d)", len(todo), len(plan.jobs), nj)
    samples = _synthesize_all(todo, nj, progress)
    import soundfile as sf

    for job in plan.jobs:
        if job.utt_id not in samples:
            samples[job.utt_id] = sf.info(job.path).frames

    for (set_name, spk, chapter), lines in plan.chapters.items():
        layout.write_text_if_changed(layout.trans_path(root, set_name, spk, chapter), layout.trans_text(lines))
    info = _summary(plan, samples, digest, record)
    rows = []
    for spec in specs:
        for spk in plan.speakers[spec.name]:
            prefix = f"{spk.speaker_id}-"
            n = sum(v for k, v in samples.items() if k.startswith(prefix))
            rows.append((spk.speaker_id, spk.sex, spec.name, n / speech.SAMPLE_RATE / 60.0, f"eSpeak {spk.voice}"))
    layout.write_text_if_changed(root / layout.SPEAKERS_TXT, layout.speakers_txt(rows))
    info["generation_seconds"] = round(time.time() - start, 1)
    layout.write_json(root / layout.INFO_JSON, info)
    layout.write_json(root / layout.DONE_MARKER, {"hash": digest, "record": record})
    return info


def _summary(plan: CorpusPlan, samples: Dict[str, int], digest: str, record: Dict[str, object]) -> Dict[str, object]:
    by_set: Dict[str, int] = defaultdict(int)
    for job in plan.jobs:
        by_set[job.set_name] += samples[job.utt_id]
    train_words = sum(plan.text.num_words(n) for n in plan.text.train_sets)
    sets = {}
    for spec in plan.config.sets():
        spk = plan.speakers[spec.name]
        sets[spec.name] = {
            "utterances": spec.num_utts,
            "speakers": len(spk),
            "chapters": sum(1 for k in plan.chapters if k[0] == spec.name),
            "hours": round(by_set[spec.name] / speech.SAMPLE_RATE / 3600.0, 3),
            "words": plan.text.num_words(spec.name),
            "condition": spec.condition,
            "voices": sorted({s.voice for s in spk}),
        }
    return {
        "hash": digest,
        "record": record,
        "sets": sets,
        "lm_text": {
            "file": layout.LM_TEXT,
            "sentences": len(plan.text.lm),
            "words": plan.text.lm_words,
            "ratio_to_paired_words": round(plan.text.lm_words / max(1, plan.text.paired_words), 2),
            "ratio_to_train_words": round(plan.text.lm_words / max(1, train_words), 2),
        },
        "lm_only_words": list(plan.text.lm_only_words),
        "homophone_sets": [list(g) for g in HOMOPHONE_SETS],
        "speakers": {name: [s.to_dict() for s in spks] for name, spks in plan.speakers.items()},
    }
