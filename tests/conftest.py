"""Shared fixtures: a tiny BERT teacher built locally, a character token list, and a model builder that goes through
ESPnet's own argument parser and ASRTask.build_model (so registration and config handling are exercised)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The embedded recipe's own code (its corpus generator and analyses), as its scripts see it: local/ on the path.
HOMOPHONES_LOCAL = Path(__file__).resolve().parents[1] / "egs" / "homophones" / "asr1" / "local"
sys.path.insert(0, str(HOMOPHONES_LOCAL))

import numpy as np
import pytest
import torch
import yaml

import espnet_bertkd  # noqa: F401  (registers model: bertkd once ESPnet's ASR task is imported)
from espnet_bertkd.kd.build_teacher import build_bert

TEXTS = [
    "THEIR HOUSE IS OVER THERE",
    "I WANT TO GO TOO",
    "THE KNIGHT RODE AT NIGHT",
    "WRITE THE RIGHT ANSWER",
    "WE SEE THE SEA FROM HERE",
    "TWO DOGS RAN TO THE PARK",
]
TOKENS: List[str] = ["<blank>", "<unk>", "<space>"] + sorted(set("".join(TEXTS)) - {" "}) + ["<sos/eos>"]


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory) -> str:
    """A randomly initialised BertForMaskedLM + uncased WordPiece tokenizer, saved like a hub model."""
    return build_bert(TEXTS * 4, str(tmp_path_factory.mktemp("teacher")), vocab_size=120, seed=0)


def encode_text(texts: Sequence[str]) -> tuple:
    """Character token ids (padded with -1, as ESPnet's collate function does) and lengths."""
    ids = [[TOKENS.index("<space>" if c == " " else c) for c in t] for t in texts]
    text = torch.full((len(ids), max(1, max(map(len, ids)))), -1, dtype=torch.long)
    for i, x in enumerate(ids):
        text[i, : len(x)] = torch.tensor(x, dtype=torch.long)
    return text, torch.tensor([len(x) for x in ids])


def build_asr_model(
    encoder: str = "conformer",
    model_conf: Dict | None = None,
    model: str = "bertkd",
    encoder_conf: Dict | None = None,
    decoder: str | None = None,
    input_size: int | None = 20,
):
    """Build through ESPnet's parser, exactly as asr_train would (see asr_train_args)."""
    return build_from_args(asr_train_args(encoder, model_conf, model, encoder_conf, decoder, input_size))


def build_from_args(args: Dict):
    """The model ESPnet's ASRTask builds from a training config (`vars(args)`), seeded as build_asr_model is."""
    import argparse

    from espnet2.tasks.asr import ASRTask

    torch.manual_seed(0)
    return ASRTask.build_model(argparse.Namespace(**args))


def batch(texts: Sequence[str] = TEXTS[:3], frames: int = 200, input_size: int = 20, seed: int = 0) -> Dict:
    """A feature batch of mixed lengths (speech is already features: --input_size, no frontend)."""
    g = torch.Generator().manual_seed(seed)
    text, text_lengths = encode_text(texts)
    lengths = torch.tensor([frames - 30 * i for i in range(len(texts))])
    return {
        "speech": torch.randn(len(texts), frames, input_size, generator=g),
        "speech_lengths": lengths,
        "text": text,
        "text_lengths": text_lengths,
        "utt_id": [f"utt{i}" for i in range(len(texts))],
    }


# ---------------------------------------------------------------------------------------------------------------
# Helpers for the model and export tests (added; the fixtures above are unchanged).

# A small KD decoder so the tests stay fast (the default is ESPnet's 6-block, 2048-unit Transformer decoder).
SMALL_KD_DECODER: Dict = {"num_blocks": 1, "linear_units": 32, "attention_heads": 2}


def kd_model_conf(teacher_dir: str, mode: str = "online", kd_layers: Sequence[int] = (1, 3), **overrides) -> Dict:
    """model_conf of a bertkd model with KD decoders at `kd_layers` (top-4 teacher, small decoders)."""
    conf = {
        "ctc_weight": 0.3,
        "kd_layers": list(kd_layers),
        "kd_decoder_conf": dict(SMALL_KD_DECODER),
        "teacher": {"model": teacher_dir, "mode": mode, "topk": 4},
    }
    conf.update(overrides)
    return conf


def soft_label_kwargs(teacher_dir: str, texts: Sequence[str], topk: int = 4) -> Dict[str, torch.Tensor]:
    """The `kd_token`/`kd_token_lengths`/`kd_prob` forward kwargs that cached mode reads from its ark files.

    Computed with the teacher directly from the transcripts (not from CTC token ids); the distinct transcripts are
    scored in one sorted batch, as the online path does, so both give bit-identical arrays.
    """
    from espnet_bertkd.kd.soft_labels import collate_arrays, pack
    from espnet_bertkd.kd.teacher_config import TeacherConfig
    from espnet_bertkd.kd.teacher import MaskedLMTeacher

    key = (teacher_dir, tuple(texts), topk)
    if key not in _SOFT_LABELS:
        teacher = MaskedLMTeacher(TeacherConfig(model=teacher_dir, topk=topk))
        unique = sorted(set(texts))
        labels = dict(zip(unique, teacher.soft_labels(unique)))
        _SOFT_LABELS[key] = collate_arrays([pack(labels[t], teacher.vocab_size) for t in texts])
    return {k: v.clone() for k, v in _SOFT_LABELS[key].items()}  # callers may edit their copy


_SOFT_LABELS: Dict[tuple, Dict[str, torch.Tensor]] = {}


def asr_train_args(
    encoder: str = "conformer",
    model_conf: Dict | None = None,
    model: str = "bertkd",
    encoder_conf: Dict | None = None,
    decoder: str | None = None,
    input_size: int | None = 20,
) -> Dict:
    """The training config as ESPnet writes it to config.yaml (`vars(args)`). `input_size=None` gives ESPnet's
    default (STFT + fbank) front-end on raw waveforms, sized small; otherwise speech is already features."""
    from espnet2.tasks.asr import ASRTask

    enc = {"num_blocks": 3, "output_size": 16, "attention_heads": 2, "linear_units": 32, **(encoder_conf or {})}
    argv = ["--token_list", "dummy", "--encoder", encoder, "--model", model]
    if input_size is None:
        argv += ["--frontend_conf", "n_fft=256", "--frontend_conf", "hop_length=128", "--frontend_conf", "n_mels=20"]
    else:
        argv += ["--input_size", str(input_size)]
    for k, v in enc.items():
        argv += ["--encoder_conf", f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"]
    if decoder is not None:
        argv += ["--decoder", decoder, "--decoder_conf", "num_blocks=1", "--decoder_conf", "linear_units=32",
                 "--decoder_conf", "attention_heads=2"]
    args = ASRTask.get_parser().parse_args(argv)
    args.token_list = list(TOKENS)
    args.model_conf = dict(model_conf or {})
    return vars(args)


def snapshot(directory: Path) -> Dict[str, bytes]:
    """Every file under `directory` (relative path -> bytes): what a refused command must leave as it was."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------------------
# Comparing soft labels computed in two different batchings (added).

# The teacher's fp32 probabilities depend on the batch shape in the last bits (BLAS picks other kernels for other
# shapes and thread counts: 1-3e-8 on a 2-core EPYC); what the tests mean to detect moves them by far more (a
# neighbour's context: 2.6e-4 with the tiny teacher). Same batching twice stays bit-identical and is compared exactly.
PROB_ATOL = 1e-6


def assert_soft_labels_close(got: Mapping[str, Sequence], want: Mapping[str, Sequence]) -> None:
    """`got`/`want`: key (utterance id) -> (kd_token, kd_prob) arrays or tensors ([..., L, 1 + K] and [..., L, K]),
    from two different batchings of the same transcripts. What "the same soft labels" means across batchings:
    keys and their order, shapes, dtypes and the transcript tokens (kd_token[..., 0]) equal; probabilities equal to
    PROB_ATOL (rtol 0), because of the batch-shape rounding above; top-k ids equal except at a near-tie, where
    rounding may order two ids the other way: a position may hold another id only if its probability is within
    PROB_ATOL of a neighbour's in the row, or it is the k-th (tied with the k+1-th, which is not stored)."""
    assert list(got) == list(want)
    for key in want:
        (got_tok, got_prob), (want_tok, want_prob) = (map(np.asarray, got[key]), map(np.asarray, want[key]))
        assert got_tok.shape == want_tok.shape and got_tok.dtype == want_tok.dtype, f"{key}: token ids"
        np.testing.assert_array_equal(got_tok[..., 0], want_tok[..., 0], err_msg=f"{key}: transcript tokens")
        np.testing.assert_allclose(got_prob, want_prob, rtol=0, atol=PROB_ATOL, err_msg=f"{key}: probs", strict=True)
        moved = got_tok[..., 1:] != want_tok[..., 1:]
        tied = np.zeros(moved.shape, dtype=bool)
        close = np.abs(np.diff(want_prob, axis=-1)) <= PROB_ATOL
        tied[..., 1:] |= close
        tied[..., :-1] |= close
        tied[..., -1] = True
        away = np.argwhere(moved & ~tied)
        assert not len(away), f"{key}: top-k ids differ away from a near-tie at {away[:5].tolist()}"


# ---------------------------------------------------------------------------------------------------------------
# A trained-looking bertkd run on disk, for the export and packing tests (moved here from test_export.py).


def kd_conf(teacher_dir: str, **overrides) -> Dict:
    """model_conf of a cached-mode bertkd model with KD decoders at layers 2 and 3, teacher.vocab_size recorded as
    training records it."""
    from espnet_bertkd.kd.teacher import load_teacher_vocab_size

    conf = {
        "ctc_weight": 0.3,
        "kd_layers": [2, 3],
        "kd_decoder_conf": dict(SMALL_KD_DECODER),
        "teacher": {"model": teacher_dir, "mode": "cached", "topk": 4,
                    "vocab_size": load_teacher_vocab_size(teacher_dir)},
    }
    conf.update(overrides)
    return conf


def write_trained(tmp_path: Path, teacher_dir: str, decoder: str | None = None, encoder_conf: Dict | None = None,
                  model_conf: Dict | None = None, *, input_size: int | None = 20, config: Dict | None = None,
                  train_dir: str = "train", model_file: str = "valid.loss.best.pth"):
    """A bertkd model and the config.yaml + model file ESPnet's trainer would have written for it, in
    TMP_PATH/TRAIN_DIR; `config` replaces top-level keys of the training config before the model is built."""
    conf = model_conf or kd_conf(teacher_dir)
    args = asr_train_args("conformer", conf, encoder_conf=encoder_conf, decoder=decoder, input_size=input_size)
    args.update(config or {})
    model = build_from_args(args)
    out = tmp_path / train_dir
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(yaml.safe_dump(args, sort_keys=False), encoding="utf-8")
    torch.save(model.state_dict(), out / model_file)
    return model, args, out / "config.yaml", out / model_file
