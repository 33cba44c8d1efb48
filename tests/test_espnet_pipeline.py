"""End to end through ESPnet's own entry points on a tiny generated data dir:
print_config -> collect-stats -> soft labels -> training -> asr_inference (beam search + shallow fusion, through
the plugin) -> export -> plain ESPnet (no plugin imported) loads the exported model with every key matching."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
import soundfile
import torch
import yaml

from conftest import TEXTS, TOKENS
from espnet_bertkd.bin import extract_soft_labels

RATE = 16000


def run(args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(args[:3])} failed:\n{proc.stderr[-4000:]}"
    return proc


def write_data_dir(root: Path, name: str, texts: List[str], seed: int) -> Path:
    """Kaldi-style data dir with short synthetic waveforms (noise + tones; content is irrelevant here)."""
    d = root / "data" / name
    (d / "wav").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    wav_scp, text = [], []
    for i, t in enumerate(texts):
        utt = f"spk1-{name}-{i:03d}"
        n = int(RATE * (0.6 + 0.05 * len(t) / 5))
        x = 0.1 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * (200 + 20 * i) * np.arange(n) / RATE)
        path = d / "wav" / f"{utt}.wav"
        soundfile.write(path, x.astype(np.float32), RATE)
        wav_scp.append(f"{utt} {path}")
        text.append(f"{utt} {t}")
    (d / "wav.scp").write_text("\n".join(wav_scp) + "\n")
    (d / "text").write_text("\n".join(text) + "\n")
    return d


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, teacher_dir) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    write_data_dir(root, "train", TEXTS, seed=1)
    write_data_dir(root, "dev", TEXTS[:2], seed=2)
    (root / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    config = {
        "model": "bertkd",
        "model_conf": {
            "ctc_weight": 0.5,
            "kd_layers": [1, 2],
            "kd_alpha": 0.5,
            "kd_decoder": "transformer",
            "kd_decoder_conf": {"num_blocks": 1, "attention_heads": 2, "linear_units": 32},
            "teacher": {"model": teacher_dir, "mode": "cached", "topk": 4},
        },
        "frontend_conf": {"n_fft": 256, "hop_length": 128, "n_mels": 20},
        "specaug": "specaug",
        "specaug_conf": {"apply_time_warp": False, "apply_freq_mask": True, "freq_mask_width_range": [0, 4],
                         "num_freq_mask": 1, "apply_time_mask": False},
        "normalize": "global_mvn",
        "encoder": "conformer",
        "encoder_conf": {"output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 2,
                         "input_layer": "conv2d", "rel_pos_type": "latest", "pos_enc_layer_type": "rel_pos",
                         "selfattention_layer_type": "rel_selfattn"},
        "optim": "adam",
        "optim_conf": {"lr": 0.001},
        "max_epoch": 2,
        "batch_type": "folded",
        "batch_size": 3,
        "best_model_criterion": [["valid", "cer_ctc", "min"]],
        "keep_nbest_models": 1,
        "num_workers": 0,
    }
    (root / "train.yaml").write_text(yaml.safe_dump(config))
    return root


def data_args(root: Path, split: str, name: str, kd: bool) -> List[str]:
    flag = f"--{split}_data_path_and_name_and_type"
    args = [flag, f"{root}/data/{name}/wav.scp,speech,sound", flag, f"{root}/data/{name}/text,text,text"]
    if kd:
        for key in ("kd_token", "kd_prob"):
            args += [flag, f"{root}/dump/kd/{name}/{key}.scp,{key},kaldi_ark"]
    return args


COMMON = ["--token_type", "char", "--token_list", "tokens.txt", "--use_preprocessor", "true", "--ngpu", "0",
          "--config", "train.yaml", "--cleaner", "none", "--g2p", "none", "--non_linguistic_symbols", "none",
          "--fold_length", "80000"]


def test_print_config_shows_plugin_keys(workdir: Path) -> None:
    """ESPnet's own parser, reached through the launcher ESPnet's asr.sh would use via --python."""
    out = run(["-m", "espnet_bertkd.launch", "-m", "espnet2.bin.asr_train", "--model", "bertkd", "--print_config"],
              workdir).stdout
    conf = yaml.safe_load(out)
    assert conf["model"] == "bertkd"
    for key in ("kd_layers", "kd_alpha", "kd_decoder", "kd_decoder_conf", "teacher", "ctc_weight", "interctc_weight"):
        assert key in conf["model_conf"], key


def test_train_decode_export(workdir: Path, teacher_dir: str, monkeypatch) -> None:
    root = workdir
    monkeypatch.chdir(root)  # config.yaml holds ESPnet's relative paths (stats/...)
    # 1. collect-stats (the KD inputs are not needed here)
    run(["-m", "espnet_bertkd.bin.asr_train", *COMMON, "--collect_stats", "true", "--output_dir", "stats",
         "--normalize", "none",
         "--train_shape_file", "data/train/wav.scp", "--valid_shape_file", "data/dev/wav.scp",
         *data_args(root, "train", "train", False), *data_args(root, "valid", "dev", False)], root)
    assert (root / "stats/train/feats_stats.npz").exists()

    # 2. cached soft labels
    for name in ("train", "dev"):
        extract_soft_labels.main(["--teacher", teacher_dir, "--text", str(root / f"data/{name}/text"),
                                  "--output_dir", str(root / f"dump/kd/{name}"), "--topk", "4", "--nj", "2"])

    # 3. a missing soft-label input fails before training starts, naming what to add
    train_args = [*COMMON, "--output_dir", "exp", "--normalize_conf", "stats_file=stats/train/feats_stats.npz",
                  "--train_shape_file", "stats/train/speech_shape", "--valid_shape_file", "stats/valid/speech_shape",
                  "--resume", "true"]
    bad = subprocess.run([sys.executable, "-m", "espnet_bertkd.bin.asr_train", *train_args,
                          *data_args(root, "train", "train", False), *data_args(root, "valid", "dev", True)],
                         cwd=root, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert bad.returncode != 0 and "kd_token" in bad.stderr and not (root / "exp").exists()

    # 4. training through the plugin's entry point
    run(["-m", "espnet_bertkd.bin.asr_train", *train_args,
         *data_args(root, "train", "train", True), *data_args(root, "valid", "dev", True)], root)
    model_file = root / "exp/valid.cer_ctc.best.pth"
    assert model_file.exists() and (root / "exp/checkpoint.pth").exists()
    assert (root / "exp/valid.cer_ctc.ave.pth").exists()  # ESPnet's checkpoint averaging
    assert any((root / "exp/tensorboard").rglob("events.out.tfevents*"))

    # 4b. --resume true continues from checkpoint.pth (KD decoders included) for one more epoch
    resumed = run(["-m", "espnet_bertkd.bin.asr_train", *train_args, "--max_epoch", "3",
                   *data_args(root, "train", "train", True), *data_args(root, "valid", "dev", True)], root)
    assert "The training was resumed" in resumed.stderr and (root / "exp/3epoch.pth").exists()
    state = torch.load(model_file, map_location="cpu")
    assert any(k.startswith("kd_decoders.") for k in state)
    assert not any("teacher" in k or "bert" in k for k in state)
    trained_config = yaml.safe_load((root / "exp/config.yaml").read_text())
    assert trained_config["model"] == "bertkd"

    # 5. decoding with ESPnet's asr_inference through the plugin: CTC beam search with shallow fusion
    lm_config, lm_file = write_lm(root)
    out = root / "decode_plugin"
    run(["-m", "espnet_bertkd.bin.asr_inference", "--asr_train_config", "exp/config.yaml",
         "--asr_model_file", str(model_file), "--lm_train_config", str(lm_config), "--lm_file", str(lm_file),
         "--lm_weight", "0.3", "--ctc_weight", "1.0", "--beam_size", "3", "--ngpu", "0", "--batch_size", "1",
         "--data_path_and_name_and_type", "data/dev/wav.scp,speech,sound", "--output_dir", str(out)], root)
    hyps = (out / "1best_recog/text").read_text().splitlines()
    assert len(hyps) == 2
    beam_speed = json.loads((out / "speed.json").read_text())  # timed inside ESPnet's Speech2Text calls
    assert beam_speed["utterances"] == 2 and beam_speed["rtf"] > 0 and beam_speed["largest_batch"] == 1
    # a batched beam search over both utterances where ESPnet has one (202611), timed like the one-by-one search
    from espnet_bertkd.compat import speech2text_decodes_batches

    if speech2text_decodes_batches():
        batched = root / "decode_plugin_batched"
        run(["-m", "espnet_bertkd.bin.asr_inference", "--asr_train_config", "exp/config.yaml",
             "--asr_model_file", str(model_file), "--lm_train_config", str(lm_config), "--lm_file", str(lm_file),
             "--lm_weight", "0.3", "--ctc_weight", "1.0", "--beam_size", "3", "--ngpu", "0", "--batch_size", "2",
             "--data_path_and_name_and_type", "data/dev/wav.scp,speech,sound", "--output_dir", str(batched)], root)
        assert len((batched / "1best_recog/text").read_text().splitlines()) == 2
        batched_speed = json.loads((batched / "speed.json").read_text())
        assert batched_speed["utterances"] == 2 and batched_speed["audio_seconds"] == beam_speed["audio_seconds"]
        assert batched_speed["largest_batch"] == 2
        assert batched_speed["inference_params"] == beam_speed["inference_params"]

    # 6. export, then plain ESPnet (no plugin) loads it with every key matching and gives the same posteriors
    from espnet_bertkd.asr.export import export_ctc

    config_path, exported, params = export_ctc(str(root / "exp/config.yaml"), str(model_file), str(root / "export"))
    check = (
        "import sys, torch\n"
        "from espnet2.tasks.asr import ASRTask\n"
        "assert 'espnet_bertkd' not in sys.modules\n"
        f"model, _ = ASRTask.build_model_from_file({str(config_path)!r}, {str(exported)!r}, 'cpu')\n"
        f"model.load_state_dict(torch.load({str(exported)!r}), strict=True)\n"
        "assert type(model).__name__ == 'ESPnetASRModel' and model.decoder is None\n"
        "model.eval(); torch.manual_seed(0); x = torch.randn(1, 8000)\n"
        "enc, lens = model.encode(x, torch.tensor([8000]))\n"
        f"torch.save(model.ctc.log_softmax(enc), {str(root / 'plain_post.pt')!r})\n"
        "print(sum(p.numel() for p in model.parameters()))\n"
    )
    plain = run(["-c", check], root)
    assert int(plain.stdout.strip().splitlines()[-1]) == params

    from espnet2.tasks.asr import ASRTask

    kd_model, _ = ASRTask.build_model_from_file(str(root / "exp/config.yaml"), str(model_file), "cpu")
    kd_model.eval()
    torch.manual_seed(0)
    x = torch.randn(1, 8000)
    with torch.no_grad():
        enc, _ = kd_model.encode(x, torch.tensor([8000]))
        ours = kd_model.ctc.log_softmax(enc)
    assert torch.allclose(ours, torch.load(root / "plain_post.pt"), atol=1e-5)
    kd_only = sum(p.numel() for n, p in kd_model.named_parameters() if n.startswith(kd_model.TRAINING_ONLY_PREFIXES))
    assert params == sum(p.numel() for p in kd_model.parameters()) - kd_only
    lm_params = sum(v.numel() for v in torch.load(lm_file, map_location="cpu").values())
    assert beam_speed["inference_params"] == params + lm_params  # shallow fusion runs the ASR model plus the LM

    # 7. batched greedy CTC: the plugin checkpoint and the exported model give the same hypotheses
    from espnet_bertkd.bin import ctc_greedy_inference

    for name, cfg, pth in (("greedy_plugin", root / "exp/config.yaml", model_file),
                           ("greedy_export", config_path, exported)):
        ctc_greedy_inference.main(["--asr_train_config", str(cfg), "--asr_model_file", str(pth),
                                   "--data_path_and_name_and_type", "data/dev/wav.scp,speech,sound",
                                   "--output_dir", str(root / name), "--batch_size", "2", "--interctc_layers", "1"])
    plugin_text = (root / "greedy_plugin/1best_recog/text").read_text()
    assert plugin_text == (root / "greedy_export/1best_recog/text").read_text()
    assert len(plugin_text.splitlines()) == 2
    assert (root / "greedy_plugin/1best_recog/encoder_interctc_layer1.txt").exists()
    speed = json.loads((root / "greedy_plugin/speed.json").read_text())
    assert speed["utterances"] == 2 and speed["rtf"] > 0 and speed["audio_seconds"] > 1.0
    assert speed["inference_params"] == params  # greedy decoding uses exactly the exported model's parameters

    # 7b. the same decoding split into two jobs (--key_file) and merged equals the single run, as asr.sh stage 7 does
    from espnet_bertkd.recipe.bin import merge_decode, split_scp

    split_scp.main(["--nj", "2", "data/dev/wav.scp", str(root / "split/keys.JOB.scp")])
    for job in (1, 2):
        ctc_greedy_inference.main(["--asr_train_config", str(cfg), "--asr_model_file", str(pth),
                                   "--data_path_and_name_and_type", "data/dev/wav.scp,speech,sound",
                                   "--key_file", str(root / f"split/keys.{job}.scp"),
                                   "--output_dir", str(root / f"split/output.{job}"), "--batch_size", "2"])
    merge_decode.main(["--nj", "2", str(root / "split/output.JOB"), str(root / "greedy_merged")])
    assert (root / "greedy_merged/1best_recog/text").read_text() == (root / "greedy_export/1best_recog/text").read_text()
    merged_speed = json.loads((root / "greedy_merged/speed.json").read_text())
    assert merged_speed["utterances"] == 2 and merged_speed["jobs"] == 2

    # 8. plain ESPnet's asr_inference decodes the exported model
    run(["-m", "espnet2.bin.asr_inference", "--asr_train_config", str(config_path), "--asr_model_file",
         str(exported), "--ctc_weight", "1.0", "--beam_size", "1", "--lm_weight", "0", "--ngpu", "0",
         "--data_path_and_name_and_type", "data/dev/wav.scp,speech,sound", "--output_dir", str(root / "decode_plain")],
        root)
    assert len((root / "decode_plain/1best_recog/text").read_text().splitlines()) == 2


def write_lm(root: Path):
    """A small (untrained) ESPnet Transformer LM written as LMTask would, for shallow fusion in decoding."""
    from espnet2.tasks.lm import LMTask

    argv = ["--token_list", str(root / "tokens.txt"), "--token_type", "char", "--lm", "transformer",
            "--lm_conf", "layer=1", "--lm_conf", "unit=32", "--lm_conf", "att_unit=16", "--lm_conf", "head=2",
            "--lm_conf", "embed_unit=16", "--lm_conf", "pos_enc=null"]
    args = LMTask.get_parser().parse_args(argv)
    args.token_list = list(TOKENS)
    model = LMTask.build_model(args)
    lm_dir = root / "lm"
    lm_dir.mkdir()
    config = vars(args)
    (lm_dir / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save(model.state_dict(), lm_dir / "model.pth")
    return lm_dir / "config.yaml", lm_dir / "model.pth"
