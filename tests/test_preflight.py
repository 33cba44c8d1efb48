"""The training entry point refuses a cached-mode KD run before any data is read when soft labels are missing,
incomplete, or written by another teacher / top-k."""
from __future__ import annotations

import pytest

from conftest import TEXTS
from espnet_bertkd.kd.build_teacher import build_bert
from espnet_bertkd.kd.extract import extract
from espnet_bertkd.kd.teacher_config import TeacherConfig
from espnet_bertkd.tasks.preflight import check_soft_labels


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, teacher_dir):
    root = tmp_path_factory.mktemp("preflight")
    text = root / "text"
    text.write_text("".join(f"utt{i} {t}\n" for i, t in enumerate(TEXTS)))
    extract(str(text), str(root / "kd"), TeacherConfig(model=teacher_dir, topk=4))
    return root


def parse(root, teacher, kd=True, **extra):
    from espnet2.tasks.asr import ASRTask

    argv = ["--model", "bertkd"]
    for split in ("train", "valid"):
        flag = f"--{split}_data_path_and_name_and_type"
        argv += [flag, f"{root}/text,text,text"]
        if kd:
            argv += [flag, f"{root}/kd/kd_token.scp,kd_token,kaldi_ark", flag, f"{root}/kd/kd_prob.scp,kd_prob,kaldi_ark"]
    args = ASRTask.get_parser().parse_args(argv)
    args.model_conf = {"kd_layers": [1, 2], "teacher": teacher}
    for k, v in extra.items():
        setattr(args, k, v)
    return args


def test_complete_labels_pass(labelled, teacher_dir):
    check_soft_labels(parse(labelled, {"model": teacher_dir, "topk": 4}))


def test_missing_inputs_named(labelled, teacher_dir):
    with pytest.raises(ValueError, match="kd_token.*extract_soft_labels"):
        check_soft_labels(parse(labelled, {"model": teacher_dir, "topk": 4}, kd=False))


def test_online_and_collect_stats_need_no_labels(labelled, teacher_dir):
    check_soft_labels(parse(labelled, {"model": teacher_dir, "mode": "online"}, kd=False))
    check_soft_labels(parse(labelled, {"model": teacher_dir, "topk": 4}, kd=False, collect_stats=True))


def test_missing_utterance_named(labelled, teacher_dir, tmp_path):
    (tmp_path / "kd").mkdir()
    for name in ("kd_token", "kd_prob"):
        lines = (labelled / "kd" / f"{name}.scp").read_text().splitlines()
        (tmp_path / "kd" / f"{name}.scp").write_text("\n".join(l for l in lines if not l.startswith("utt3 ")) + "\n")
    (tmp_path / "text").write_text((labelled / "text").read_text())
    with pytest.raises(ValueError, match="utt3"):
        check_soft_labels(parse(tmp_path, {"model": teacher_dir, "topk": 4}))


def test_other_topk_or_teacher_refused(labelled, teacher_dir, tmp_path):
    with pytest.raises(ValueError, match="topk"):
        check_soft_labels(parse(labelled, {"model": teacher_dir, "topk": 8}))
    other = build_bert(["completely different words here"] * 5, str(tmp_path / "other"), vocab_size=60)
    with pytest.raises(ValueError, match="vocab_hash"):
        check_soft_labels(parse(labelled, {"model": other, "topk": 4}))
