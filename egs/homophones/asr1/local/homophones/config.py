"""Options of the synthetic corpus, its size presets, and the hash that identifies a generated corpus.

Why a hash: generation is deterministic, so (options, generator version, eSpeak NG version) fully determine the
files. The hash is stored in the output directory; re-running with the same hash is a no-op (or resumes an
interrupted run), and a different hash into the same directory is refused instead of mixing two corpora.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Dict, List, Mapping, Tuple

from homophones.voices import VOICE_SETS

# Bump when a change to the grammar, voices or signal processing changes the output for the same options.
GENERATOR_VERSION = 1

TRAIN_SET = "train-clean"


@dataclass(frozen=True)
class SetSpec:
    """One LibriSpeech-style set: its name, size, speaker pool and recording condition."""

    name: str
    num_utts: int
    is_train: bool
    voice_pool: str  # "train", "dev" or "test" (a pool of voices.VOICE_SETS[CorpusConfig.voices])
    condition: str  # "clean" or "other"
    utts_per_speaker: int


@dataclass(frozen=True)
class CorpusConfig:
    """Everything that decides the corpus content. `nj` and the output directory are not here: they do not change
    the files."""

    seed: int = 0
    num_train: int = 2500
    num_dev: int = 200
    num_test: int = 200
    num_dev_other: int = 0
    num_test_other: int = 0
    lm_ratio: float = 20.0  # LM-text words / all paired words
    lm_only_fraction: float = 0.1  # share of eligible open-class words kept out of the paired training text
    train_utts_per_speaker: int = 60
    eval_utts_per_speaker: int = 20
    utts_per_chapter: int = 30
    voices: str = "narrow"  # a key of voices.VOICE_SETS

    def __post_init__(self) -> None:
        if self.voices not in VOICE_SETS:
            raise ValueError(f"voices must be one of {sorted(VOICE_SETS)}, not {self.voices!r}")
        for f in ("num_train", "num_dev", "num_test", "num_dev_other", "num_test_other"):
            if getattr(self, f) < 0:
                raise ValueError(f"{f} must be >= 0")
        if self.num_train < 1:
            raise ValueError("num_train must be >= 1")
        if self.lm_ratio < 0:
            raise ValueError("lm_ratio must be >= 0")
        for f in ("train_utts_per_speaker", "eval_utts_per_speaker", "utts_per_chapter"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1")

    def sets(self) -> List[SetSpec]:
        """The non-empty sets, evaluation sets first (their sentences are drawn first, see text.py)."""
        specs = [
            SetSpec("dev-clean", self.num_dev, False, "dev", "clean", self.eval_utts_per_speaker),
            SetSpec("test-clean", self.num_test, False, "test", "clean", self.eval_utts_per_speaker),
            SetSpec("dev-other", self.num_dev_other, False, "dev", "other", self.eval_utts_per_speaker),
            SetSpec("test-other", self.num_test_other, False, "test", "other", self.eval_utts_per_speaker),
            SetSpec(TRAIN_SET, self.num_train, True, "train", "clean", self.train_utts_per_speaker),
        ]
        return [s for s in specs if s.num_utts > 0]

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    def replace(self, **overrides: object) -> "CorpusConfig":
        """A copy with some options changed (None values are ignored, so argparse defaults can pass through)."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown corpus options: {sorted(unknown)}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


# smoke: what CI runs (a few minutes end to end). default: sized for the 45-minute run.sh on 2 CPU cores.
PRESETS: Dict[str, CorpusConfig] = {
    "smoke": CorpusConfig(num_train=150, num_dev=30, num_test=30, train_utts_per_speaker=20,
                          eval_utts_per_speaker=10, utts_per_chapter=10),
    "default": CorpusConfig(),
}


def options_record(config: CorpusConfig, espeak_version: str) -> Dict[str, object]:
    """What the hash covers: the options, the generator version and the synthesiser version."""
    return {"options": config.to_dict(), "generator_version": GENERATOR_VERSION, "espeak_ng": espeak_version}


def options_hash(record: Mapping[str, object]) -> str:
    blob = json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def describe_difference(old: Mapping[str, object], new: Mapping[str, object]) -> str:
    """'key: old -> new' for every differing entry (options flattened), for error messages."""

    def flat(d: Mapping[str, object]) -> Dict[str, object]:
        out: Dict[str, object] = {}
        for k, v in d.items():
            if isinstance(v, Mapping):
                out.update({f"{k2}": v2 for k2, v2 in flat(v).items()})
            else:
                out[k] = v
        return out

    a, b = flat(old), flat(new)
    diffs: List[Tuple[str, object, object]] = [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
                                               if a.get(k) != b.get(k)]
    return ", ".join(f"{k}: {x!r} -> {y!r}" for k, x, y in diffs) or "(no visible difference)"
