"""The embedded recipe's configs (egs/homophones/asr1/conf): the systems differ only in the method, each builds and
takes one training step, the soft-label settings run.sh extracts with match the KD configs, and its local tools."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TEXTS, TOKENS, encode_text, soft_label_kwargs

RECIPE = Path(__file__).resolve().parents[1] / "egs/homophones/asr1"
SYSTEMS = ("ctc", "interctc", "aed", "final_aed_kd", "inter_aed_kd")
KD_LAYERS = {"ctc": [], "interctc": [], "aed": [4], "final_aed_kd": [4], "inter_aed_kd": [2, 4]}
DECODER_SYSTEMS = ("aed", "final_aed_kd", "inter_aed_kd")


def load(system: str) -> dict:
    return yaml.safe_load((RECIPE / "conf" / f"train_asr_{system}.yaml").read_text())


def test_systems_differ_only_in_the_method():
    def shared(system):
        conf = load(system)
        conf.pop("model_conf")
        conf["encoder_conf"].pop("interctc_layer_idx", None)
        return conf

    base = shared("ctc")
    kd_confs = []
    for system in SYSTEMS:
        assert shared(system) == base, system
        mc = load(system)["model_conf"]
        assert mc["kd_layers"] == KD_LAYERS[system], system
        if system in DECODER_SYSTEMS:
            kd_confs.append({k: v for k, v in mc.items() if k not in ("kd_layers", "kd_alpha")})
            assert (mc["kd_alpha"] == 0.0) == (system == "aed")
    # aed and the KD systems share every decoder setting: the teacher's probabilities are the only difference
    assert all(c == kd_confs[0] for c in kd_confs)
    assert load("final_aed_kd")["model_conf"]["kd_alpha"] == load("inter_aed_kd")["model_conf"]["kd_alpha"]
    assert "normalize" not in base and base["encoder_conf"]["num_blocks"] == 4


def test_run_sh_extracts_what_the_kd_configs_read():
    """The configs own the teacher: asr.sh stage 4 extracts with their teacher block (extract_soft_labels
    --asr_config), stage 3 trains the teacher where they say, and run.sh sets none of it."""
    run_sh = (RECIPE / "run.sh").read_text()
    assert "--kd_temperature" not in run_sh and "--topk" not in run_sh and "--teacher " not in run_sh
    assert "--train_teacher true" in run_sh
    for system in DECODER_SYSTEMS:
        teacher = load(system)["model_conf"]["teacher"]
        assert teacher == {"model": "exp/teacher", "mode": "cached", "topk": 8, "temperature": 3.0}, system


@pytest.mark.parametrize("system", SYSTEMS)
def test_config_builds_and_trains_one_step(system, tmp_path, teacher_dir):
    import numpy as np
    from espnet2.tasks.abs_task import scheduler_classes
    from espnet2.tasks.asr import ASRTask

    (tmp_path / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    np.savez(tmp_path / "stats.npz", count=np.array(100), sum=np.full(40, -500.0), sum_square=np.full(40, 2900.0))
    argv = ["--config", str(RECIPE / "conf" / f"train_asr_{system}.yaml"), "--token_list", str(tmp_path / "tokens.txt"),
            "--normalize", "global_mvn", "--normalize_conf", f"stats_file={tmp_path / 'stats.npz'}"]
    if system in DECODER_SYSTEMS:
        argv += ["--model_conf", f"teacher.model={teacher_dir}"]
    args = ASRTask.get_parser().parse_args(argv)
    torch.manual_seed(0)
    model = ASRTask.build_model(args)
    assert model.kd_layers == KD_LAYERS[system]
    optimizer, = ASRTask.build_optimizers(args, model)
    scheduler = scheduler_classes[args.scheduler](optimizer, **args.scheduler_conf)
    texts = TEXTS[:2]
    text, text_lengths = encode_text(texts)
    batch = {"speech": 0.1 * torch.randn(2, 32000, generator=torch.Generator().manual_seed(0)),
             "speech_lengths": torch.tensor([32000, 24000]), "text": text, "text_lengths": text_lengths,
             "utt_id": ["u0", "u1"], **soft_label_kwargs(teacher_dir, texts, topk=8)}
    model.train()
    loss, stats, _ = model(**batch)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    scheduler.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert ("loss_kd" in stats) == (system in DECODER_SYSTEMS)
    # the learning rate rises from 0 over the warm-up (piecewise linear), then falls to the end of training
    lrs = args.scheduler_conf["warmup_lr_list"]
    assert lrs[0] == 0.0 and lrs[1] == max(lrs) and 0 < optimizer.param_groups[0]["lr"] < lrs[1]


def test_word_lists(tmp_path):
    info = tmp_path / "corpus_info.json"
    info.write_text(json.dumps({"homophone_sets": [["THEIR", "THERE"], ["TO", "TWO", "TOO"]],
                                "lm_only_words": ["CLOCK", "CLOCKS"]}))
    subprocess.run([sys.executable, str(RECIPE / "local/word_lists.py"), str(info), str(tmp_path / "local")], check=True,
                   capture_output=True)
    assert (tmp_path / "local/homophones.txt").read_text() == "THEIR THERE\nTO TWO TOO\n"
    assert (tmp_path / "local/lm_only_words.txt").read_text() == "CLOCK\nCLOCKS\n"
