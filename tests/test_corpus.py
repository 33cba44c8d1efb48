"""The synthetic corpus generator (homophones): text splits, eSpeak NG synthesis, LibriSpeech layout."""
from __future__ import annotations

import hashlib
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import soundfile as sf

from homophones import PRESETS, CorpusConfig, CorpusOptionsError, HOMOPHONE_SETS, generate_text, make_corpus
from homophones import librispeech_layout as layout
from homophones import speech, voices
from homophones.build import plan_corpus, synthesize_job
from homophones.grammar import Grammar, GrammarError, fix_articles
from homophones.text import lexicon

# Spellings eSpeak NG says almost, not exactly, like the rest of their group (voice -> words).
NEAR_HOMOPHONES = {"en-us": {"THEY'RE"}, "en": {"THEY'RE", "ONE"}}

TINY = CorpusConfig(
    seed=3, num_train=12, num_dev=4, num_test=4, num_dev_other=3, num_test_other=3,
    train_utts_per_speaker=4, eval_utts_per_speaker=2, utts_per_chapter=3,
)


def _text(preset: str, seed: int = 0):
    c = PRESETS[preset].replace(seed=seed)
    specs = c.sets()
    return generate_text(c.seed, {s.name: s.num_utts for s in specs}, [s.name for s in specs if s.is_train],
                         lm_ratio=c.lm_ratio, lm_only_fraction=c.lm_only_fraction)


@pytest.fixture(scope="module")
def smoke_text():
    return _text("smoke")


@pytest.fixture(scope="module")
def default_text():
    return _text("default")


def _words(sentences: List[str]) -> set:
    return {w for s in sentences for w in s.split()}


# ---------------------------------------------------------------------------------------------------------------
# text
def test_text_is_deterministic_for_a_seed_and_differs_across_seeds(smoke_text):
    again = _text("smoke", seed=0)
    assert again.sets == smoke_text.sets and again.lm == smoke_text.lm
    other = _text("smoke", seed=1)
    assert other.sets["train-clean"] != smoke_text.sets["train-clean"]
    assert other.sets["test-clean"] != smoke_text.sets["test-clean"]
    assert other.lm != smoke_text.lm


def test_sentences_are_upper_case_lexicon_words_with_correct_articles(smoke_text):
    lex = lexicon()
    everything = [s for ss in smoke_text.sets.values() for s in ss] + smoke_text.lm
    for s in everything:
        words = s.split()
        assert 3 <= len(words) <= 40, s
        for w in words:
            assert re.fullmatch(r"[A-Z][A-Z']*", w) and w in lex, (w, s)
        assert words == fix_articles(words), s  # no "A APPLE", no "AN BOOK"
    assert any(" AN " in f" {s} " for s in everything)
    # variety: templates combine into many distinct sentences
    assert len(set(smoke_text.lm)) > 0.8 * len(smoke_text.lm)


def test_fix_articles():
    assert fix_articles("A OLD BOOK AND A HOUR AND A UNIFORM AND AN CAT".split()) == \
        "AN OLD BOOK AND AN HOUR AND A UNIFORM AND A CAT".split()


def test_pruned_grammar_never_produces_excluded_words():
    g = Grammar({"S": ["{X} (RED | BLUE) [VERY] {Y}"], "X": ["THE CAT", "THE DOG"], "Y": ["SLEPT", "RAN"]})
    rng = random.Random(0)
    out = {g.pruned({"DOG", "BLUE", "VERY"}).generate(rng) for _ in range(200)}
    assert out == {"THE CAT RED SLEPT", "THE CAT RED RAN"}
    with pytest.raises(GrammarError):
        g.pruned({"SLEPT", "RAN"})
    with pytest.raises(GrammarError):
        Grammar({"S": ["{MISSING}"]})


def test_homophones_occur_in_paired_and_lm_text(smoke_text, default_text):
    def complete(sentences):
        words = _words(sentences)
        return [g for g in HOMOPHONE_SETS if all(w in words for w in g)]

    assert len(HOMOPHONE_SETS) >= 40
    assert complete(smoke_text.lm) == list(HOMOPHONE_SETS)  # every spelling of every group, in context
    assert complete(default_text.lm) == list(HOMOPHONE_SETS)
    assert len(complete(smoke_text.sets["train-clean"])) >= 0.4 * len(HOMOPHONE_SETS)
    assert len(complete(default_text.sets["train-clean"])) >= 0.9 * len(HOMOPHONE_SETS)
    test_words = _words(default_text.sets["test-clean"])
    assert sum(all(w in test_words for w in g) for g in HOMOPHONE_SETS) >= 20
    # homophones are everywhere: most sentences hold at least one
    homophones = {w for g in HOMOPHONE_SETS for w in g}
    train = default_text.sets["train-clean"]
    assert sum(bool(homophones & set(s.split())) for s in train) > 0.8 * len(train)


def test_eval_sentences_never_in_training_or_lm_text(smoke_text, default_text):
    for t in (smoke_text, default_text):
        dev, test, train, lm = (set(t.sets["dev-clean"]), set(t.sets["test-clean"]), set(t.sets["train-clean"]),
                                set(t.lm))
        assert len(dev) == len(t.sets["dev-clean"]) and len(test) == len(t.sets["test-clean"])
        assert len(train) == len(t.sets["train-clean"])
        assert not (dev & test) and not ((dev | test) & train) and not ((dev | test) & lm)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_lm_text_is_at_least_20x_the_paired_text(preset, smoke_text, default_text):
    t = {"smoke": smoke_text, "default": default_text}[preset]
    assert t.lm_words >= 20 * t.paired_words
    assert t.lm_words >= 20 * t.num_words("train-clean")


def test_some_words_appear_only_in_the_lm_text(smoke_text, default_text):
    for t in (smoke_text, default_text):
        lm_only = set(t.lm_only_words)
        assert len(lm_only) >= 10
        assert not lm_only & _words(t.sets["train-clean"])
        assert len(lm_only & _words(t.lm)) >= 0.8 * len(lm_only)
        assert not lm_only & {w for g in HOMOPHONE_SETS for w in g}
    # ... and the evaluation sets use some of them (that is where LM knowledge pays off)
    assert set(default_text.lm_only_words) & _words(default_text.sets["test-clean"])


# ---------------------------------------------------------------------------------------------------------------
# speech
def test_homophone_sets_sound_the_same_in_espeak():
    engine = speech.engine()
    for voice, near in NEAR_HOMOPHONES.items():
        for group in HOMOPHONE_SETS:
            phones = {re.sub("[ˈˌ]", "", engine.phonemes(w.lower(), voice)) for w in group if w not in near}
            assert len(phones) == 1, (voice, group, phones)
    assert engine.phonemes("knight", "en-us") != engine.phonemes("night club", "en-us")


def test_voices_exist_and_evaluation_voices_are_held_out():
    engine = speech.engine()
    wide = voices.VOICE_SETS["wide"]
    for name, voice_set in voices.VOICE_SETS.items():
        for accent, _ in voice_set.accents:
            engine.check_voice(accent)
        for pool in voice_set.pools.values():
            for variant, sex in pool:
                engine.check_voice(f"en-us+{variant}")
                assert sex in ("M", "F")
        train, dev, test = ({v for v, _ in voice_set.pools[p]} for p in ("train", "dev", "test"))
        assert train and dev and test, name
        assert not train & dev and not train & test and not dev & test, name
        # Every set is a selection from the wide one, so its held-out pools stay held out.
        for pool, variants in voice_set.pools.items():
            assert set(variants) <= set(wide.pools[pool]), (name, pool)
        assert set(voice_set.accents) <= set(wide.accents), name
    with pytest.raises(speech.ESpeakError):
        engine.check_voice("en-us+no_such_variant")
    with pytest.raises(speech.ESpeakError):
        engine.check_voice("xx-no-such-language")


def test_synthesis_gives_plausible_16k_audio():
    text = "THE KNIGHT RODE DOWN THE ROAD AT NIGHT"
    audio = speech.render(text, "en-us+m3", 175, 50, 50, np.random.default_rng(0))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert speech.SAMPLE_RATE == 16000
    assert 0.5 < len(audio) / 16000 < 10.0
    assert np.max(np.abs(audio)) <= 1.0 and np.sqrt(np.mean(audio ** 2)) > 1e-3
    longer = speech.render(text + " AND THEY PUT THEIR BOOKS OVER THERE", "en-us+m3", 175, 50, 50,
                           np.random.default_rng(0))
    assert len(longer) > 1.4 * len(audio)
    slower = speech.synthesize_clean(text, "en-us+m3", 120, 50, 50)
    assert len(slower) > 1.2 * len(speech.synthesize_clean(text, "en-us+m3", 175, 50, 50))


def test_synthesis_is_reproducible_and_speaker_dependent():
    text = "PLEASE WRITE THE RIGHT ANSWER"
    a = speech.render(text, "en-us+f2", 170, 60, 50, np.random.default_rng(7))
    speech.render("SOMETHING ELSE ENTIRELY WITH ANOTHER VOICE", "en+klatt3", 200, 20, 80, np.random.default_rng(1))
    b = speech.render(text, "en-us+f2", 170, 60, 50, np.random.default_rng(7))
    assert np.array_equal(a, b)  # same seed, same audio, whatever was synthesised in between
    other_seed = speech.render(text, "en-us+f2", 170, 60, 50, np.random.default_rng(8))
    assert not np.array_equal(a, other_seed)
    clean_f2 = speech.synthesize_clean(text, "en-us+f2", 170, 60, 50)
    clean_m1 = speech.synthesize_clean(text, "en-us+m1", 170, 60, 50)
    n = min(len(clean_f2), len(clean_m1))
    assert not np.allclose(clean_f2[:n], clean_m1[:n], atol=1e-3)
    clean_gb = speech.synthesize_clean(text, "en+f2", 170, 60, 50)
    assert len(clean_gb) != len(clean_f2) or not np.array_equal(clean_gb, clean_f2)


def test_synthesis_is_identical_in_another_process_a_second_later():
    """eSpeak seeds a generator from the clock and breathy variants use libc rand(): both must be pinned."""
    text, voice_list = "THE TEA WAS MADE BY THE MAID", ["en-us+Reed", "en-gb-x-rp+f5", "en+klatt3"]
    here = [hashlib.md5(speech.engine().synthesize(text.lower(), v, 221, 34, 61, seed=5).tobytes()).hexdigest()
            for v in voice_list]
    time.sleep(1.1)
    code = f"""
import ctypes, hashlib, importlib.util, sys
spec = importlib.util.spec_from_file_location("corpus_speech", {speech.__file__!r})
m = importlib.util.module_from_spec(spec); sys.modules["corpus_speech"] = m; spec.loader.exec_module(m)
libc = ctypes.CDLL(None); libc.srand(12345); [libc.rand() for _ in range(7)]
e = m.engine()
e.synthesize("warm up with other words", "en+m1", 150, 80, 20, seed=9)
print(" ".join(hashlib.md5(e.synthesize({text.lower()!r}, v, 221, 34, 61, seed=5).tobytes()).hexdigest()
               for v in {voice_list!r}))
"""
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert there == here
    assert len(set(here)) == 3


def test_degradation_hits_the_requested_snr():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    cond = speech.Acoustics(snr_db=(10.0, 10.0), peak_dbfs=(-6.0, -6.0), pad_seconds=(0.0, 0.0),
                            noise_colors=("white",))
    noisy = speech.degrade(tone, rng, cond).astype(np.float64)
    clean = tone / np.max(np.abs(tone)) * 10 ** (-6 / 20)
    snr = 10 * np.log10(np.mean(clean ** 2) / np.mean((noisy - clean) ** 2))
    assert abs(snr - 10.0) < 0.5


# ---------------------------------------------------------------------------------------------------------------
# layout, idempotency
def _files(root: Path) -> Dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def _digests(root: Path) -> Dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != layout.INFO_JSON}


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "synth"
    info = make_corpus(str(root), TINY, nj=1, progress=False)
    return root, info


def read_trans(path: Path) -> List[Tuple[str, str]]:
    """Parse a LibriSpeech trans.txt back into (utt_id, transcript) pairs."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line:
            uid, _, text = line.partition(" ")
            pairs.append((uid, text))
    return pairs


def test_layout_matches_librispeech(tiny_corpus):
    root, info = tiny_corpus
    expected_sets = {"train-clean": 12, "dev-clean": 4, "test-clean": 4, "dev-other": 3, "test-other": 3}
    assert {p.name for p in root.iterdir() if p.is_dir()} == set(expected_sets)
    speakers_txt = (root / layout.SPEAKERS_TXT).read_text()
    for set_name, n in expected_sets.items():
        flacs = sorted((root / set_name).glob("*/*/*.flac"))
        assert len(flacs) == n == info["sets"][set_name]["utterances"]
        for trans in (root / set_name).glob("*/*/*.trans.txt"):
            speaker, chapter = trans.parent.parent.name, trans.parent.name
            assert trans.name == f"{speaker}-{chapter}.trans.txt"
            ids = [u for u, _ in read_trans(trans)]
            assert ids == sorted(ids)
            assert sorted(ids) == sorted(p.stem for p in trans.parent.glob("*.flac"))
            for uid, text in read_trans(trans):
                assert re.fullmatch(rf"{speaker}-{chapter}-\d{{4}}", uid)
                assert re.fullmatch(r"[A-Z' ]+", text)
        for flac in flacs:
            meta = sf.info(str(flac))
            assert meta.samplerate == 16000 and meta.channels == 1 and meta.format == "FLAC"
            assert meta.subtype == "PCM_16" and 0.5 < meta.duration < 15.0
            audio, sr = sf.read(str(flac), dtype="float32")
            assert sr == 16000 and audio.ndim == 1 and np.abs(audio).max() > 0.01
        for spk_dir in (root / set_name).iterdir():
            # what Kaldi's librispeech data_prep.sh does to find the reader's gender
            line = [ln for ln in speakers_txt.splitlines() if re.match(rf"^{spk_dir.name}[ ]+\|", ln)]
            assert len(line) == 1 and line[0].split("|")[1].strip().lower() in ("m", "f")
            assert line[0].split("|")[2].strip() == set_name
    lm = (root / layout.LM_TEXT).read_text().splitlines()
    assert lm and all(re.fullmatch(r"[A-Z' ]+", s) for s in lm)
    assert info["lm_text"]["words"] >= 20 * sum(s["words"] for s in info["sets"].values())
    # held-out voices: dev and test speakers use their own variant pools, never a training variant
    voice_set = voices.VOICE_SETS[TINY.voices]
    assert {s["accent"] for spk in info["speakers"].values() for s in spk} <= {a for a, _ in voice_set.accents}
    pools = {name: {v for v, _ in voice_set.pools[pool]} for name, pool in
             (("train-clean", "train"), ("dev-clean", "dev"), ("dev-other", "dev"), ("test-clean", "test"),
              ("test-other", "test"))}
    for name, pool in pools.items():
        assert {s["variant"] for s in info["speakers"][name]} <= pool
        assert all(s["voice"] in info["sets"][name]["voices"] for s in info["speakers"][name])
    assert not list(root.rglob(".*.tmp"))


def test_rerun_is_a_noop_and_other_options_are_refused(tiny_corpus):
    root, info = tiny_corpus
    before = _files(root)
    again = make_corpus(str(root), TINY, nj=1, progress=False)
    assert again == info
    assert _files(root) == before  # nothing rewritten: same files, same mtimes
    with pytest.raises(CorpusOptionsError, match="num_train: 12 -> 13"):
        make_corpus(str(root), TINY.replace(num_train=13), nj=1, progress=False)
    with pytest.raises(CorpusOptionsError, match="seed"):
        make_corpus(str(root), TINY.replace(seed=4), nj=1, progress=False)
    with pytest.raises(CorpusOptionsError, match="voices: 'narrow' -> 'wide'"):
        make_corpus(str(root), TINY.replace(voices="wide"), nj=1, progress=False)
    assert _files(root) == before


def test_interrupted_run_resumes_to_identical_files(tiny_corpus, tmp_path):
    root, _ = tiny_corpus
    reference = _digests(root)
    copy = tmp_path / "resumed"
    # a fresh run in two processes gives the same bytes as the single-process run
    make_corpus(str(copy), TINY, nj=2, progress=False)
    assert _digests(copy) == reference
    # simulate an interruption: finished marker gone, one FLAC and one trans.txt missing, a temp file left
    (copy / layout.DONE_MARKER).unlink()
    flac = sorted(copy.glob("train-clean/*/*/*.flac"))[5]
    flac.unlink()
    trans = sorted(copy.glob("dev-clean/*/*/*.trans.txt"))[0]
    trans.unlink()
    (flac.parent / f".{flac.name}.123.abc.flac.tmp").write_bytes(b"partial")
    untouched = sorted(copy.glob("test-clean/*/*/*.flac"))[0]
    mtime = untouched.stat().st_mtime_ns
    with pytest.raises(CorpusOptionsError):  # an unfinished corpus still refuses other options
        make_corpus(str(copy), TINY.replace(lm_ratio=25.0), nj=1, progress=False)
    make_corpus(str(copy), TINY, nj=1, progress=False)
    assert _digests(copy) == reference
    assert untouched.stat().st_mtime_ns == mtime


def test_plan_is_cheap_and_consistent(tmp_path):
    plan = plan_corpus(TINY, tmp_path)
    assert len(plan.jobs) == 26 and len({j.utt_id for j in plan.jobs}) == 26
    assert {j.condition for j in plan.jobs if j.set_name.endswith("other")} == {"other"}
    job = plan.jobs[0]
    assert np.array_equal(synthesize_job(job), synthesize_job(job))
    assert not os.listdir(tmp_path)  # planning writes nothing


def test_cli(tmp_path):
    from make_corpus import config_from_args, get_parser, main

    args = get_parser().parse_args(["--output_dir", "x", "--size", "smoke", "--num_train", "7", "--seed", "5"])
    config = config_from_args(args)
    assert config == PRESETS["smoke"].replace(num_train=7, seed=5)
    wide = config_from_args(get_parser().parse_args(["--output_dir", "x", "--voices", "wide"]))
    assert wide == PRESETS["default"].replace(voices="wide") and PRESETS["default"].voices == "narrow"
    with pytest.raises(ValueError, match="voices must be one of"):
        CorpusConfig(voices="everyone")
    out = tmp_path / "cli"
    main(["--output_dir", str(out), "--size", "smoke", "--num_train", "3", "--num_dev", "2", "--num_test", "2",
          "--train_utts_per_speaker", "3", "--eval_utts_per_speaker", "2", "--nj", "1", "--no_progress"])
    assert len(list(out.glob("*/*/*/*.flac"))) == 7
    assert (out / layout.DONE_MARKER).is_file()
    with pytest.raises(SystemExit, match="different options"):
        main(["--output_dir", str(out), "--size", "smoke", "--num_train", "4", "--no_progress"])
