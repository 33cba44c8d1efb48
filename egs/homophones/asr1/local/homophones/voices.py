"""Speakers of the synthetic corpus: eSpeak NG accent x voice variant x base rate / pitch.

Why fixed variant pools: like LibriSpeech, evaluation speakers must be unseen in training. A speaker's identity in
eSpeak is mostly its *variant* (formant scaling, pitch range, voicing, or a different synthesiser: the klatt
variants), so dev and test each get variants that never occur in training, and different ones from each other.
Accents (language voices) are shared by all sets, like regional accents in a real corpus. All names below exist in
the data shipped by `espeakng-loader` (checked by `check_voices`); the few novelty variants (robots, echo, whisper,
children) are left out.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Dict, List, Mapping, Sequence, Tuple

# Language voices (accents) with sampling weights: mostly US and southern British English.
ACCENTS: Tuple[Tuple[str, float], ...] = (
    ("en-us", 4.0),
    ("en", 3.0),  # British English (en-gb)
    ("en-gb-x-rp", 2.0),
    ("en-us-nyc", 1.0),
    ("en-gb-scotland", 1.0),
    ("en-gb-x-gbclan", 1.0),  # Lancaster
    ("en-gb-x-gbcwmd", 1.0),  # West Midlands
    ("en-029", 1.0),  # Caribbean
)

# Voice variants (files in espeak-ng-data/voices/!v) and the sex written to SPEAKERS.TXT.
TRAIN_VARIANTS: Tuple[Tuple[str, str], ...] = (
    ("m1", "M"), ("m2", "M"), ("m3", "M"), ("m5", "M"), ("m7", "M"), ("m8", "M"),
    ("f1", "F"), ("f2", "F"), ("f4", "F"),
    ("klatt", "M"), ("klatt3", "M"), ("klatt6", "M"),
    ("Alex", "M"), ("Andy", "M"), ("adam", "M"), ("antonio", "M"), ("benjamin", "M"), ("edward", "M"),
    ("gustave", "M"), ("max", "M"), ("michel", "M"), ("paul", "M"), ("pedro", "M"), ("rob", "M"),
    ("travis", "M"), ("victor", "M"), ("Denis", "M"), ("Mike", "M"), ("Lee", "M"), ("Nguyen", "M"),
    ("Reed", "M"), ("boris", "M"), ("grandpa", "M"), ("marcelo", "M"), ("miguel", "M"), ("norbert", "M"),
    ("Alicia", "F"), ("Andrea", "F"), ("aunty", "F"), ("steph", "F"), ("steph2", "F"), ("shelby", "F"),
)
DEV_VARIANTS: Tuple[Tuple[str, str], ...] = (
    ("m6", "M"), ("f5", "F"), ("klatt5", "M"), ("linda", "F"), ("edward2", "M"), ("robert", "M"),
    ("Annie", "F"), ("Mario", "M"),
)
TEST_VARIANTS: Tuple[Tuple[str, str], ...] = (
    ("m4", "M"), ("f3", "F"), ("klatt2", "M"), ("belinda", "F"), ("david", "M"), ("quincy", "M"),
    ("grandma", "F"), ("Michael", "M"),
)
VARIANT_POOLS: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "train": TRAIN_VARIANTS,
    "dev": DEV_VARIANTS,
    "test": TEST_VARIANTS,
}


@dataclass(frozen=True)
class VoiceSet:
    """The accents and variant pools ("train", "dev", "test") a corpus draws its speakers from."""

    accents: Tuple[Tuple[str, float], ...]
    pools: Mapping[str, Tuple[Tuple[str, str], ...]]


# "wide": every accent and variant above, for studies of speaker robustness. "narrow" (the default): two accents and
# eSpeak's own formant variants (8 for training, 2 unseen ones each for dev and test), still with random rate,
# pitch, level and noise per speaker. Why narrow: a from-scratch Conformer learns it faster, which matters in the
# few thousand updates a 2-core, 45-minute run allows (same recipe model, after 940 updates: dev CTC loss 63 and
# CER 0.72 on narrow, 72.5 and 0.77 on wide, where the blank plateau is about 74). Homophones sound the same in
# both, so the errors only an LM can fix are there either way.
VOICE_SETS: Dict[str, VoiceSet] = {
    "wide": VoiceSet(ACCENTS, VARIANT_POOLS),
    "narrow": VoiceSet(
        ACCENTS[:2],
        {
            "train": (("m1", "M"), ("m2", "M"), ("m3", "M"), ("m5", "M"), ("m7", "M"), ("f1", "F"), ("f2", "F"),
                      ("f4", "F")),
            "dev": (("m6", "M"), ("f5", "F")),
            "test": (("m4", "M"), ("f3", "F")),
        },
    ),
}


@dataclass(frozen=True)
class SpeakingStyle:
    """Ranges a speaker's base parameters are drawn from (eSpeak units: rate in words/min, pitch and pitch range
    0-99), and the per-utterance jitter around them."""

    rate: Tuple[int, int] = (150, 195)
    pitch: Tuple[int, int] = (25, 75)
    pitch_range: Tuple[int, int] = (30, 80)
    rate_jitter: float = 0.06  # relative, per utterance
    pitch_jitter: int = 5  # absolute, per utterance


CLEAN_STYLE = SpeakingStyle()
OTHER_STYLE = SpeakingStyle(rate=(135, 235), pitch=(10, 90), pitch_range=(10, 95), rate_jitter=0.1, pitch_jitter=8)


@dataclass(frozen=True)
class Speaker:
    """One synthetic reader: eSpeak voice `accent+variant` with base rate and pitch."""

    speaker_id: int
    accent: str
    variant: str
    sex: str
    rate: int
    pitch: int
    pitch_range: int

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}"

    def to_dict(self) -> Dict[str, object]:
        return {**asdict(self), "voice": self.voice}


def _weighted(rng: random.Random, items: Sequence[Tuple[str, float]]) -> str:
    return rng.choices([i for i, _ in items], weights=[w for _, w in items], k=1)[0]


def plan_speakers(
    rng: random.Random,
    pool: str,
    num_speakers: int,
    first_id: int,
    style: SpeakingStyle = CLEAN_STYLE,
    voice_set: VoiceSet = VOICE_SETS["wide"],
) -> List[Speaker]:
    """`num_speakers` speakers from variant pool `pool` ("train", "dev", "test") of `voice_set`. Variants are dealt
    round-robin from a shuffled pool, so every variant is used before any repeats; ids are first_id, first_id + 1,
    ..."""
    variants = list(voice_set.pools[pool])
    speakers: List[Speaker] = []
    order: List[Tuple[str, str]] = []
    for i in range(num_speakers):
        if not order:
            order = variants[:]
            rng.shuffle(order)
        variant, sex = order.pop()
        speakers.append(
            Speaker(
                speaker_id=first_id + i,
                accent=_weighted(rng, voice_set.accents),
                variant=variant,
                sex=sex,
                rate=rng.randint(*style.rate),
                pitch=rng.randint(*style.pitch),
                pitch_range=rng.randint(*style.pitch_range),
            )
        )
    return speakers


def utterance_params(rng: random.Random, speaker: Speaker, style: SpeakingStyle) -> Tuple[int, int, int]:
    """(rate, pitch, pitch_range) of one utterance: the speaker's base values with a little jitter."""
    rate = int(round(speaker.rate * (1.0 + rng.uniform(-style.rate_jitter, style.rate_jitter))))
    pitch = min(99, max(0, speaker.pitch + rng.randint(-style.pitch_jitter, style.pitch_jitter)))
    return max(80, rate), pitch, speaker.pitch_range


def num_speakers_for(num_utts: int, utts_per_speaker: int) -> int:
    return max(1, math.ceil(num_utts / max(1, utts_per_speaker))) if num_utts > 0 else 0
