"""Teacher faults and numerics: each fault is provoked and its message asserted, with what was written before kept.

1. a hub id that cannot be reached offline; 2. a tokenizer that does not belong to the model; 3. KD decoder vocabulary
vs teacher; 4. transcripts longer than the teacher's maximum length; 5. soft labels missing utterances or written by
another teacher / top-k / temperature; 6. NaN/inf KD losses and half-precision teachers.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List

import kaldiio
import numpy as np
import pytest
import torch

from conftest import TEXTS, batch, build_asr_model, kd_model_conf, snapshot, soft_label_kwargs
from espnet_bertkd.kd.build_teacher import build_bert, build_wordpiece_tokenizer
from espnet_bertkd.kd.extract import chunk_paths, extract
from espnet_bertkd.kd.online import OnlineSoftLabels
from espnet_bertkd.kd.soft_labels import (
    KD_PROB,
    KD_TOKEN,
    META_FILE,
    batch_targets,
    check_coverage,
    check_meta,
    collate_arrays,
)
from espnet_bertkd.kd.teacher import (
    MaskedLMTeacher,
    SoftLabels,
    TeacherConfig,
    TeacherLoadError,
    load_teacher_vocab_size,
    window_bounds,
)

TOPK = 4
LONG = " ".join(TEXTS)  # about 30 teacher tokens: longer than the short teacher below can see


def write_text(path: Path, texts: List[str], prefix: str = "spk-") -> List[str]:
    utts = [f"{prefix}{i:03d}" for i in range(len(texts))]
    path.write_text("".join(f"{u} {t}\n" for u, t in zip(utts, texts)), encoding="utf-8")
    return utts


def kd_labels(out: Path) -> Dict[str, tuple]:
    tok = kaldiio.load_scp(str(out / f"{KD_TOKEN}.scp"))
    prob = kaldiio.load_scp(str(out / f"{KD_PROB}.scp"))
    return {u: (np.asarray(tok[u]), np.asarray(prob[u])) for u in tok.keys()}


@pytest.fixture(scope="module")
def teacher_vocab(teacher_dir) -> int:
    return load_teacher_vocab_size(teacher_dir)


@pytest.fixture(scope="module")
def short_teacher_dir(tmp_path_factory) -> str:
    """A teacher that sees at most 8 positions ([CLS] + 6 tokens + [SEP])."""
    return build_bert(TEXTS * 4, str(tmp_path_factory.mktemp("short")), vocab_size=120, max_position_embeddings=8)


# ---------------------------------------------------------------------------------------------------- 1. offline hub id
OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from espnet_bertkd.kd.extract import extract
    from espnet_bertkd.kd.teacher_config import TeacherConfig
    from espnet_bertkd.kd.teacher import MaskedLMTeacher, load_teacher_vocab_size, load_vocab_hash

    out, text = sys.argv[1], sys.argv[2]
    result = {"hash": load_vocab_hash("bert-base-uncased")}
    calls = {
        "teacher": lambda: MaskedLMTeacher(TeacherConfig(model="bert-base-uncased")),
        "vocab_size": lambda: load_teacher_vocab_size("bert-base-uncased"),
        "extract": lambda: extract(text, out, TeacherConfig(model="bert-base-uncased", topk=4)),
    }
    for name, call in calls.items():
        try:
            call()
            result[name] = None
        except Exception as e:
            result[name] = {"types": [t.__name__ for t in type(e).__mro__], "message": str(e),
                            "cause": repr(e.__cause__), "suppressed": e.__suppress_context__}
    print("RESULT " + json.dumps(result))
    """
)


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """One subprocess with downloads off and an empty Hugging Face home: nothing can reach the network, and no cached
    bert-base-uncased can make the test pass by accident."""
    root = tmp_path_factory.mktemp("offline")
    hf_home = root / "hf_home"
    hf_home.mkdir()
    out = root / "kd"
    out.mkdir()
    (out / META_FILE).write_text('{"teacher": "earlier run"}\n')  # an earlier extraction's files must survive
    (out / "split1").mkdir()
    (out / "split1" / "kd_token.0.scp").write_text("utt0 x.ark:1\n")
    before = snapshot(out)
    text = root / "text"
    write_text(text, TEXTS[:2])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(hf_home)}
    env.pop("HF_HUB_CACHE", None)
    env.pop("TRANSFORMERS_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, str(out), str(text)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), hf_home, before, snapshot(out)


@pytest.mark.parametrize("call", ["teacher", "vocab_size", "extract"])
def test_offline_hub_id_says_how_to_pass_a_directory(offline_run, call):
    result, hf_home, _, _ = offline_run
    err = result[call]
    assert err is not None, f"{call}: bert-base-uncased loaded although HF_HOME was empty and downloads were off"
    assert "TeacherLoadError" in err["types"] and "OSError" in err["types"]
    message = err["message"]
    assert "'bert-base-uncased'" in message
    assert "could not be loaded offline" in message
    assert str(hf_home) in message  # where it looked
    assert "teacher.model=/path/to/DIR" in message and "--teacher DIR" in message
    assert "save_pretrained(DIR)" in message
    # no transformers traceback chained under ours
    assert err["cause"] == "None" and err["suppressed"]


def test_offline_hub_id_loses_nothing(offline_run):
    result, _, before, after = offline_run
    assert result["hash"] is None  # the preflight fingerprint is "unknown", not an exception
    assert after == before
    assert "vocab_size" in result["vocab_size"]["message"]  # the model can still be built from teacher.vocab_size


def test_missing_local_directory(tmp_path):
    missing = str(tmp_path / "no" / "such" / "teacher")
    for call in (lambda: MaskedLMTeacher(TeacherConfig(model=missing)), lambda: load_teacher_vocab_size(missing)):
        with pytest.raises(TeacherLoadError, match="no such local directory") as err:
            call()
        assert missing in str(err.value) and "save_pretrained" in str(err.value)


def test_directory_without_a_saved_model_lists_its_files(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(TeacherLoadError) as err:
        MaskedLMTeacher(TeacherConfig(model=str(tmp_path)))
    message = str(err.value)
    assert "is a directory but not a masked LM" in message
    assert "notes.txt" in message and "config.json" in message


# ------------------------------------------------------------------------------------------ 2. tokenizer vs model
@pytest.fixture(scope="module")
def mismatched_dir(tmp_path_factory):
    """A 60-token BERT whose directory got the tokenizer of another, larger vocabulary."""
    root = str(tmp_path_factory.mktemp("mismatched"))
    build_bert(TEXTS * 4, root, vocab_size=60)
    other = TEXTS * 4 + ["completely different words arrive here with many more letters quickly"] * 4
    tokenizer = build_wordpiece_tokenizer(other, 200, root)
    return root, len(tokenizer), load_teacher_vocab_size(root)


def test_tokenizer_of_another_model_names_both_sizes(mismatched_dir):
    root, tokenizer_size, model_size = mismatched_dir
    assert tokenizer_size > model_size
    with pytest.raises(ValueError) as err:
        MaskedLMTeacher(TeacherConfig(model=root))
    message = str(err.value)
    assert f"tokenizer has {tokenizer_size} tokens" in message
    assert f"has {model_size}" in message and "another model" in message


def test_tokenizer_mismatch_stops_extraction_before_writing(mismatched_dir, tmp_path):
    root, _, _ = mismatched_dir
    text = tmp_path / "text"
    write_text(text, TEXTS[:2])
    with pytest.raises(ValueError, match="tokenizer has"):
        extract(str(text), str(tmp_path / "kd"), TeacherConfig(model=root, topk=TOPK))
    assert snapshot(tmp_path / "kd") == {}


@pytest.fixture(scope="module")
def tokenizerless_dir(tmp_path_factory) -> str:
    """A teacher directory without its tokenizer files: transformers makes a 5-token stand-in that reads every word
    as [UNK] (issue 24: extraction and online training used to report success on it)."""
    root = str(tmp_path_factory.mktemp("tokenizerless"))
    build_bert(TEXTS * 4, root, vocab_size=60)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        Path(root, name).unlink(missing_ok=True)
    return root


def test_teacher_without_tokenizer_files_is_refused_everywhere(tokenizerless_dir, tmp_path):
    from espnet_bertkd.tasks.preflight import check_soft_labels

    with pytest.raises(ValueError, match=r"tokenizer has only \d+ tokens but the model's vocabulary has 60: its "
                                         r"tokenizer files .* are missing"):
        MaskedLMTeacher(TeacherConfig(model=tokenizerless_dir))
    text = tmp_path / "text"
    write_text(text, TEXTS[:2])
    with pytest.raises(ValueError, match="tokenizer files"):
        extract(str(text), str(tmp_path / "kd"), TeacherConfig(model=tokenizerless_dir, topk=TOPK))
    assert not (tmp_path / "kd").exists()
    # online mode: the training preflight, before ESPnet starts
    args = preflight_args(tmp_path, {"model": tokenizerless_dir, "mode": "online", "topk": TOPK})
    with pytest.raises(ValueError, match="tokenizer files"):
        check_soft_labels(args)


def test_transcripts_the_tokenizer_cannot_read_are_refused_naming_them(tmp_path, caplog):
    from espnet_bertkd.tasks.preflight import check_soft_labels

    # a teacher that never saw the letters J, Q, X, Z: a word of them is [UNK]
    teacher = build_bert(TEXTS * 4, str(tmp_path / "teacher"), vocab_size=60)
    text = tmp_path / "text"
    write_text(text, ["JAZZ QUIZ", "FIX JAZZ", *TEXTS[:2]])
    with pytest.raises(ValueError, match=r"maps 4 of the \d+ tokens of .*text \(\d+%\) to its unknown token "
                                         r"'\[UNK\]', e.g. in spk-000 \(JAZZ, QUIZ\), spk-001 \(FIX, JAZZ\)"):
        extract(str(text), str(tmp_path / "kd"), TeacherConfig(model=teacher, topk=TOPK))
    assert not (tmp_path / "kd").exists()
    args = preflight_args(tmp_path, {"model": teacher, "mode": "online", "topk": TOPK})
    with pytest.raises(ValueError, match="to its unknown token"):
        check_soft_labels(args)
    # one unknown word in many: extracted, with a warning naming it
    write_text(text, ["JAZZ", *(TEXTS * 3)])
    with caplog.at_level(logging.WARNING):
        assert extract(str(text), str(tmp_path / "kd"), TeacherConfig(model=teacher, topk=TOPK))
    assert "1 of the" in caplog.text and "spk-000 (JAZZ)" in caplog.text


# --------------------------------------------------------------------------------- 3. decoder vocabulary vs teacher
def test_configured_vocab_size_differs_from_teacher(teacher_dir, teacher_vocab):
    with pytest.raises(ValueError) as err:
        MaskedLMTeacher(TeacherConfig(model=teacher_dir, vocab_size=teacher_vocab + 5))
    message = str(err.value)
    assert f"teacher.vocab_size={teacher_vocab + 5}" in message and f"vocabulary of {teacher_vocab}" in message


def test_online_model_built_for_another_vocabulary_fails_at_first_batch(teacher_dir, teacher_vocab):
    teacher = {"model": teacher_dir, "mode": "online", "topk": TOPK, "vocab_size": 40}
    model = build_asr_model("transformer", kd_model_conf(teacher_dir, "online", teacher=teacher))
    assert model.kd_decoders[0].output_layer.out_features == 41
    with pytest.raises(ValueError, match=rf"teacher.vocab_size=40 .*vocabulary of {teacher_vocab}"):
        model(**batch())


def test_cached_ids_beyond_the_decoder_vocabulary_name_utterance_and_id(teacher_dir, teacher_vocab):
    teacher = {"model": teacher_dir, "mode": "cached", "topk": TOPK, "vocab_size": 40}
    model = build_asr_model("transformer", kd_model_conf(teacher_dir, "cached", teacher=teacher))
    b = batch()
    b.update(soft_label_kwargs(teacher_dir, TEXTS[:3]))
    b[KD_TOKEN][b[KD_TOKEN] >= 40] = 39  # everything fits ...
    b[KD_TOKEN][2, 1, 3] = teacher_vocab - 1  # ... but one top-k id of utt2
    with pytest.raises(ValueError) as err:
        model(**b)
    message = str(err.value)
    assert "'utt2'" in message and f"token id {teacher_vocab - 1}" in message and "0..39" in message


def test_negative_topk_id_is_named(teacher_dir):
    b = soft_label_kwargs(teacher_dir, TEXTS[:2])
    b[KD_TOKEN][1, 0, 2] = -7  # e.g. a writer that overflowed a narrow integer type
    with pytest.raises(ValueError, match=r"'b' hold token id -7"):
        batch_targets(b[KD_TOKEN], b[f"{KD_TOKEN}_lengths"], b[KD_PROB], ["a", "b"], 120, TOPK)


# ------------------------------------------------------------------------------------------- 4. long transcripts
@torch.no_grad()
def windowed_reference(teacher: MaskedLMTeacher, tokens: List[int], window: int, topk: int):
    """Each position masked inside its own centred window, the full model run on it (no LM-head shortcut)."""
    tok = teacher.tokenizer
    ids, probs = [], []
    for i in range(len(tokens)):
        start, stop = window_bounds(i, len(tokens), window)
        seq = list(tokens[start:stop])
        seq[i - start] = tok.mask_token_id
        logits = teacher.model(input_ids=torch.tensor([[tok.cls_token_id] + seq + [tok.sep_token_id]])).logits
        values, top = logits[0, i - start + 1].float().topk(topk)
        ids.append(top.numpy())
        probs.append(torch.softmax(values, -1).numpy())
    return np.array(ids), np.array(probs)


def test_transcript_longer_than_max_positions_is_windowed(short_teacher_dir):
    teacher = MaskedLMTeacher(TeacherConfig(model=short_teacher_dir, topk=TOPK))
    assert teacher.model.config.max_position_embeddings == 8 and teacher.window == 6
    tokens = teacher.tokenize(LONG)
    assert len(tokens) > 3 * teacher.window
    label = teacher.soft_labels([LONG])[0]
    assert label.token_ids.tolist() == tokens
    ids, probs = windowed_reference(teacher, tokens, 6, TOPK)
    np.testing.assert_array_equal(label.topk_ids, ids)
    np.testing.assert_allclose(label.topk_probs, probs, atol=1e-6, rtol=0)


def test_long_transcripts_through_extraction_and_online_training(short_teacher_dir, tmp_path):
    text = tmp_path / "text"
    utts = write_text(text, [LONG, TEXTS[0]])
    assert extract(str(text), str(tmp_path / "kd"), TeacherConfig(model=short_teacher_dir, topk=TOPK))
    got = kd_labels(tmp_path / "kd")
    teacher = MaskedLMTeacher(TeacherConfig(model=short_teacher_dir, topk=TOPK))
    assert got[utts[0]][0].shape == (len(teacher.tokenize(LONG)), 1 + TOPK)

    model = build_asr_model("transformer", kd_model_conf(short_teacher_dir, "online", kd_layers=[3]))
    loss, stats, _ = model(**batch([LONG, TEXTS[0]], frames=400))
    assert torch.isfinite(loss).all() and torch.isfinite(stats["loss_kd_layer3"]).all()


def test_max_length_beyond_the_position_embeddings_names_both(short_teacher_dir):
    with pytest.raises(ValueError) as err:
        MaskedLMTeacher(TeacherConfig(model=short_teacher_dir, max_length=40))
    assert "teacher.max_length=40" in str(err.value) and "<= 8" in str(err.value)


# ------------------------------------------------------------------------------- 5. coverage and metadata
def test_coverage_names_first_few_missing_and_the_count(tmp_path):
    scp = tmp_path / "kd_token.scp"
    scp.write_text("u0 a.ark:1\nu1 a.ark:2\n")
    wanted = [f"u{i}" for i in range(9)]
    with pytest.raises(ValueError) as err:
        check_coverage(scp, wanted, "data/train/text")
    message = str(err.value)
    assert "7 of the 9 utterances" in message and "data/train/text" in message
    assert "'u2', 'u3', 'u4', 'u5', 'u6' and 2 more" in message
    assert "'u7'" not in message


def test_meta_stores_the_fingerprint_and_mismatches_name_every_field(teacher_dir, teacher_vocab, tmp_path):
    text = tmp_path / "text"
    write_text(text, TEXTS[:2])
    out = tmp_path / "kd"
    assert extract(str(text), str(out), TeacherConfig(model=teacher_dir, topk=TOPK))
    meta = json.loads((out / META_FILE).read_text())
    teacher = MaskedLMTeacher(TeacherConfig(model=teacher_dir, topk=TOPK))
    assert (meta["teacher"], meta["vocab_hash"], meta["topk"], meta["temperature"], meta["vocab_size"]) == (
        teacher_dir, teacher.vocab_hash, TOPK, 1.0, teacher_vocab
    )
    files = snapshot(out)
    with pytest.raises(ValueError) as err:
        check_meta(out, {"vocab_hash": "0123456789abcdef", "topk": 8, "temperature": 3.0, "vocab_size": teacher_vocab})
    message = str(err.value)
    for field in (f"vocab_hash={teacher.vocab_hash!r}", "topk=4", "temperature=1.0",  # what was written
                  "vocab_hash='0123456789abcdef'", "topk=8", "temperature=3.0"):  # what the config asks for
        assert field in message, field
    assert "vocab_size" not in message  # it matched
    assert repr(teacher_dir) in message  # which teacher wrote them
    assert snapshot(out) == files


def preflight_args(root: Path, teacher: dict):
    from espnet2.tasks.asr import ASRTask

    argv = ["--model", "bertkd"]
    for split in ("train", "valid"):
        flag = f"--{split}_data_path_and_name_and_type"
        argv += [flag, f"{root}/text,text,text", flag, f"{root}/kd/kd_token.scp,kd_token,kaldi_ark",
                 flag, f"{root}/kd/kd_prob.scp,kd_prob,kaldi_ark"]
    args = ASRTask.get_parser().parse_args(argv)
    args.model_conf = {"kd_layers": [1, 2], "teacher": teacher}
    return args


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, teacher_dir) -> Path:
    root = tmp_path_factory.mktemp("labelled")
    write_text(root / "text", TEXTS)
    assert extract(str(root / "text"), str(root / "kd"), TeacherConfig(model=teacher_dir, topk=TOPK))
    return root


def test_preflight_vocab_size_differs_from_the_labels(labelled, teacher_dir, teacher_vocab):
    from espnet_bertkd.tasks.preflight import check_soft_labels

    teacher = {"model": teacher_dir, "topk": TOPK, "vocab_size": 40}
    with pytest.raises(ValueError, match=rf"vocab_size={teacher_vocab}.* asks for vocab_size=40"):
        check_soft_labels(preflight_args(labelled, teacher))


def test_preflight_teacher_not_here_warns_with_both_ids(labelled, teacher_dir, tmp_path, caplog):
    from espnet_bertkd.tasks.preflight import check_soft_labels

    elsewhere = str(tmp_path / "teacher_on_another_machine")
    teacher = {"model": elsewhere, "topk": TOPK, "vocab_size": load_teacher_vocab_size(teacher_dir)}
    with caplog.at_level(logging.WARNING):
        check_soft_labels(preflight_args(labelled, teacher))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(elsewhere in w and teacher_dir in w and "cannot load" in w for w in warnings), warnings


# ------------------------------------------------------------------------------------------------- 6. numerics
def espnet_epoch_average(batches: List[tuple], key: str) -> float:
    """What ESPnet's trainer reports for `key` over these (stats, weight) batches (None stats dropped first)."""
    from espnet2.train.reporter import SubReporter, aggregate

    reporter = SubReporter("train", 1, 0)
    for stats, weight in batches:
        reporter.register({k: v for k, v in stats.items() if v is not None}, weight)
        reporter.next()
    return float(aggregate(reporter.stats[key]))


@pytest.fixture
def kd_model(teacher_dir):
    return build_asr_model("transformer", kd_model_conf(teacher_dir, "cached"))


def cached_batch(teacher_dir, texts=TEXTS[:3]) -> dict:
    b = batch(texts)
    b.update(soft_label_kwargs(teacher_dir, texts))
    return b


def test_finite_batch_reports_no_skip(kd_model, teacher_dir):
    loss, stats, _ = kd_model(**cached_batch(teacher_dir))
    assert torch.isfinite(loss).all() and float(stats["kd_skipped"]) == 0.0


def test_nan_kd_loss_is_reported_and_skipped(kd_model, teacher_dir, caplog):
    good_stats, good_weight = kd_model(**cached_batch(teacher_dir))[1:]
    with torch.no_grad():
        kd_model.kd_decoders[1].output_layer.bias[5] = float("nan")  # the layer-3 decoder has gone bad
    with caplog.at_level(logging.WARNING):
        loss, stats, weight = kd_model(**cached_batch(teacher_dir))
    assert torch.isnan(loss).all()
    assert float(stats["kd_skipped"]) == 1.0
    assert torch.isfinite(stats["loss_kd_layer1"]).all() and torch.isfinite(stats["loss_ctc"]).all()
    assert not torch.isfinite(stats["loss_kd_layer3"]).all() and torch.isnan(stats["loss"]).all()
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "utt0, utt1, utt2" in warning and "loss_kd_layer3=nan" in warning and "loss_kd_layer1" not in warning
    # ESPnet skips an update whose gradient norm is not finite ...
    loss.sum().backward()
    assert not torch.isfinite(torch.nn.utils.clip_grad_norm_(kd_model.parameters(), 1.0))
    # ... and the epoch averages it reports hold only the good batch
    batches = [(good_stats, good_weight), (stats, weight)]
    assert espnet_epoch_average(batches, "loss_kd_layer3") == pytest.approx(float(good_stats["loss_kd_layer3"]))
    assert espnet_epoch_average(batches, "loss") == pytest.approx(float(good_stats["loss"]))
    assert espnet_epoch_average(batches, "kd_skipped") == pytest.approx(0.5)


def test_infinite_kl_with_finite_gradient_is_still_skipped(kd_model, teacher_dir, caplog, monkeypatch):
    """A student probability of exactly 0 on a teacher top-k id: KL = inf but its gradient is finite, so without
    the explicit skip ESPnet would update on a loss that its reporter then drops."""
    b = cached_batch(teacher_dir)
    topk_id = int(b[KD_TOKEN][0, 0, 1])
    with torch.no_grad():
        kd_model.kd_decoders[0].output_layer.bias[topk_id] = float("-inf")
    # the premise: left alone, this batch's loss is inf and its gradient finite (ESPnet would update)
    with monkeypatch.context() as m:
        m.setattr(kd_model, "_skip_nonfinite_kd", lambda loss, *args: loss)
        raw, _, _ = kd_model(**cached_batch(teacher_dir))
        raw.sum().backward()
    assert float(raw.detach()) == float("inf")
    assert torch.isfinite(torch.nn.utils.clip_grad_norm_(kd_model.parameters(), 1.0))
    kd_model.zero_grad()
    with caplog.at_level(logging.WARNING):
        loss, stats, _ = kd_model(**b)
    assert float(stats["loss_kd_layer1"]) == float("inf")
    assert "loss_kd_layer1=inf" in caplog.text and "utt0" in caplog.text
    loss.sum().backward()
    assert not torch.isfinite(torch.nn.utils.clip_grad_norm_(kd_model.parameters(), 1.0))


def test_validation_warning_without_utterance_ids(kd_model, teacher_dir, caplog):
    b = cached_batch(teacher_dir)
    del b["utt_id"]
    with torch.no_grad():
        kd_model.kd_decoders[0].output_layer.bias[3] = float("nan")
    kd_model.eval()
    with caplog.at_level(logging.WARNING), torch.no_grad():
        _, stats, _ = kd_model(**b)
    assert float(stats["kd_skipped"]) == 1.0
    assert "a batch of 3 utterances" in caplog.text and "validation averages" in caplog.text


def test_nan_soft_labels_from_a_half_precision_teacher_keep_earlier_chunks(teacher_dir, tmp_path, monkeypatch):
    text = tmp_path / "text"
    utts = write_text(text, TEXTS)
    out = tmp_path / "kd"
    original = MaskedLMTeacher.soft_labels

    def overflowing(self, texts, *args, **kwargs):
        labels = original(self, texts, *args, **kwargs)
        return [SoftLabels(l.token_ids, l.topk_ids, np.full_like(l.topk_probs, np.nan)) if t == TEXTS[3] else l
                for t, l in zip(texts, labels)]

    monkeypatch.setattr(MaskedLMTeacher, "soft_labels", overflowing)
    config = TeacherConfig(model=teacher_dir, topk=TOPK)
    with pytest.raises(ValueError) as err:
        extract(str(text), str(out), config, chunk_size=2)
    assert repr(utts[3]) in str(err.value) and "teacher.dtype=float32" in str(err.value)
    assert chunk_paths(out, 1, 1, 0, KD_PROB)[1].exists()  # chunk 0 (utterances 0, 1) was kept
    assert not chunk_paths(out, 1, 1, 1, KD_PROB)[1].exists()  # the bad chunk was not stored
    kept = snapshot(out)
    monkeypatch.setattr(MaskedLMTeacher, "soft_labels", original)
    assert extract(str(text), str(out), config, chunk_size=2)  # the re-run resumes at chunk 1
    assert {k: v for k, v in snapshot(out).items() if k in kept and "meta" not in k} == {
        k: v for k, v in kept.items() if "meta" not in k
    }
    assert list(kd_labels(out)) == utts


@pytest.fixture(scope="module")
def bf16_labels(teacher_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16")
    utts = write_text(root / "text", TEXTS)
    config = TeacherConfig(model=teacher_dir, topk=8, dtype="bfloat16")
    assert extract(str(root / "text"), str(root / "kd"), config)
    return utts, kd_labels(root / "kd")


def test_bf16_teacher_stored_probabilities_sum_to_one(bf16_labels):
    utts, got = bf16_labels
    for u in utts:
        probs = got[u][1]
        assert probs.dtype == np.float32 and probs.shape[1] == 8
        np.testing.assert_allclose(probs.astype(np.float64).sum(-1), 1.0, atol=1e-5, rtol=0)


def test_bf16_teacher_used_probabilities_renormalised_in_fp32(bf16_labels):
    utts, got = bf16_labels
    loaded = collate_arrays([got[u] for u in utts])
    raw = loaded[KD_PROB].sum(-1)
    lengths = loaded[f"{KD_TOKEN}_lengths"]
    valid = torch.arange(raw.size(1))[None, :] < lengths[:, None]
    targets = batch_targets(loaded[KD_TOKEN], lengths, loaded[KD_PROB], utts, None, 8)
    assert targets.topk_probs.dtype == torch.float32
    sums = targets.topk_probs.sum(-1)
    torch.testing.assert_close(sums[valid], torch.ones(int(valid.sum())), atol=1e-6, rtol=0)


def test_bf16_online_teacher_targets_sum_to_one(teacher_dir):
    from conftest import TOKENS, encode_text

    online = OnlineSoftLabels(TeacherConfig(model=teacher_dir, mode="online", topk=8, dtype="bfloat16"), TOKENS,
                              "<space>")
    got = online(*encode_text(TEXTS), torch.device("cpu"))
    assert next(online.teacher.model.parameters()).dtype == torch.bfloat16
    lengths = got[f"{KD_TOKEN}_lengths"]
    valid = torch.arange(got[KD_PROB].size(1))[None, :] < lengths[:, None]
    assert ((got[KD_PROB].sum(-1) - 1).abs()[valid] <= 1e-3).all()
    targets = batch_targets(got[KD_TOKEN], lengths, got[KD_PROB], None, online.teacher.vocab_size, 8)
    torch.testing.assert_close(targets.topk_probs.sum(-1)[valid], torch.ones(int(valid.sum())), atol=1e-6, rtol=0)
