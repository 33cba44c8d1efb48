"""The LibriSpeech recipes (egs/librispeech*/asr1/run.sh) and their configs (egs/librispeech*/asr1/conf/):

- stage 1 of each recipe on a LibriSpeech-layout fixture (every set, tiny FLACs): the data directories ESPnet's
  recipes use (train_960 = the three training sets, dev = dev-clean + dev-other, the test sets) and the LM text,
  written under tmp_path only;
- every ASR config builds through ESPnet's parser and ASRTask at its configured size and takes one training step on
  CPU (KD systems with a tiny local BERT teacher standing in for bert-base-uncased); the LM and decoding configs
  parse (and the LM takes a step);
- run.sh's own options: missing or bad ones fail with a message naming them.
"""
from __future__ import annotations

import argparse
import gzip
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import soundfile
import torch
import yaml

from conftest import TEXTS, TOKENS, encode_text, soft_label_kwargs
from espnet_bertkd.kd.requirements import requirements
from espnet_bertkd.tasks.data_check import validate_data_dir

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"librispeech": REPO / "egs/librispeech/asr1", "librispeech_100": REPO / "egs/librispeech_100/asr1"}
SYSTEMS = ("ctc", "interctc", "aed", "final_aed_kd", "inter_aed_kd")
KD_SYSTEMS = ("final_aed_kd", "inter_aed_kd")  # the teacher's probabilities enter the loss
DECODER_SYSTEMS = ("aed",) + KD_SYSTEMS  # KD decoders (aed: kd_alpha 0, transcript only)
KD_LAYERS = {"ctc": [], "interctc": [], "aed": [12], "final_aed_kd": [12], "inter_aed_kd": [4, 8, 12]}
CONFIGS = [(corpus, system) for corpus in RECIPES for system in SYSTEMS]

# --------------------------------------------------------------------------------------------------------------
# stage 1 on a LibriSpeech-layout fixture

# set -> reader -> chapter -> utterance numbers. Readers 103 / 1034 / 19 in different training sets check that the
# combined directory is in C order across sources ('103-' < '1034-' < '19-'); counts differ per set.
FIXTURE: Dict[str, Dict[str, Dict[str, List[str]]]] = {
    "train-clean-100": {"19": {"198": ["0000", "0001"]}, "26": {"495": ["0004"]}},
    "train-clean-360": {"1034": {"121119": ["0000", "0002"]}},
    "train-other-500": {"103": {"1240": ["0000", "0001"], "12400": ["0000"]}, "20": {"205": ["0003"]}},
    "dev-clean": {"1272": {"128104": ["0000", "0002"]}},
    "dev-other": {"116": {"288045": ["0000", "0001", "0002"]}},
    "test-clean": {"1089": {"134686": ["0000"]}},
    "test-other": {"1688": {"142285": ["0000", "0001"]}},
}
WORDS = "ALL THE WORLD IS A STAGE AND MEN WOMEN MERELY PLAYERS THEY HAVE THEIR EXITS ENTRANCES".split()


def utt_ids(set_name: str) -> List[str]:
    return [f"{r}-{c}-{n}" for r, chapters in FIXTURE[set_name].items() for c, ns in chapters.items() for n in ns]


def transcript(utt: str) -> str:
    seed = sum(map(ord, utt))
    return " ".join(WORDS[(seed + 3 * i) % len(WORDS)] for i in range(2 + seed % 4))


@pytest.fixture(scope="module")
def librispeech_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus") / "LibriSpeech"
    rng = np.random.default_rng(0)
    for set_name, readers in FIXTURE.items():
        for reader, chapters in readers.items():
            for chapter, numbers in chapters.items():
                d = root / set_name / reader / chapter
                d.mkdir(parents=True)
                lines = []
                for n in numbers:
                    utt = f"{reader}-{chapter}-{n}"
                    soundfile.write(d / f"{utt}.flac", (0.1 * rng.standard_normal(1600)).astype(np.float32), 16000,
                                    format="FLAC")
                    lines.append(f"{utt} {transcript(utt)}\n")
                (d / f"{reader}-{chapter}.trans.txt").write_text("".join(lines))
    return root


def run_recipe(corpus: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(["bash", str(RECIPES[corpus] / "run.sh"), "--python", sys.executable, *args],
                          cwd=cwd, env=env, capture_output=True, text=True)


def repo_state() -> str:
    """Everything git sees (untracked and ignored files included) under the recipes and the shared configs."""
    paths = ["egs/librispeech", "egs/librispeech_100"]
    return subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "--", *paths],
                          cwd=REPO, capture_output=True, text=True, check=True).stdout


def read_keys(path: Path) -> List[str]:
    return [line.split(maxsplit=1)[0] for line in path.read_text().splitlines()]


def check_combined(data: Path, name: str, sources: List[str], root: Path) -> None:
    """`data/name` holds exactly the utterances of the source sets, in C order, with their own audio and text."""
    ids = sorted((u for s in sources for u in utt_ids(s)), key=lambda u: u.encode())
    out = data / name
    assert read_keys(out / "wav.scp") == ids
    assert (out / "text").read_text() == "".join(f"{u} {transcript(u)}\n" for u in ids)
    assert (out / "utt2spk").read_text() == "".join(f"{u} {u.rsplit('-', 1)[0]}\n" for u in ids)
    by_set = {u: s for s in sources for u in utt_ids(s)}
    for line in (out / "wav.scp").read_text().splitlines():
        utt, path = line.split(maxsplit=1)
        reader, chapter, _ = utt.split("-")
        assert path == str(root.resolve() / by_set[utt] / reader / chapter / f"{utt}.flac")  # run.sh: realpath
    report = validate_data_dir(out, check_audio=True, fs=16000, allowed_chars="librispeech")
    assert (report.utterances, report.warnings) == (len(ids), [])
    assert report.speakers == len({u.rsplit("-", 1)[0] for u in ids})


@pytest.mark.parametrize("corpus", list(RECIPES))
def test_stage1_data_prep(corpus, librispeech_root, tmp_path):
    lm_text = tmp_path / "librispeech-lm-norm.txt.gz"
    with gzip.open(lm_text, "wt") as f:
        f.write("THE FIRST BOOK SENTENCE\n\nAND   A SECOND ONE\n")
    lm_args = ["--lm_text", str(lm_text)] if corpus == "librispeech" else []  # the 100 h run: without LM text
    before = repo_state()
    data = tmp_path / "data"
    start = time.time()
    proc = run_recipe(corpus, "--librispeech_root", str(librispeech_root), *lm_args, "--stage", "1", "--stop_stage",
                      "1", "--datadir", str(data), "--expdir", str(tmp_path / "exp"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert ("no --lm_text" in proc.stderr) == (not lm_args)
    print(f"{corpus} stage 1: {time.time() - start:.1f} s")
    assert repo_state() == before  # nothing written into the repository

    if corpus == "librispeech":
        train, train_sources = "train_960", ["train-clean-100", "train-clean-360", "train-other-500"]
        prepared = train_sources + ["dev-clean", "dev-other", "test-clean", "test-other"]
    else:
        train, train_sources = "train_clean_100", ["train-clean-100"]
        prepared = ["train-clean-100", "dev-clean", "dev-other", "test-clean", "test-other"]
    expected = sorted({s.replace("-", "_") for s in prepared} | {train, "dev", "lm_train.txt"})
    assert sorted(p.name for p in data.iterdir()) == expected  # train-clean-360/-other-500 unused by the 100 h one
    for s in prepared:
        check_combined(data, s.replace("-", "_"), [s], librispeech_root)
    check_combined(data, train, train_sources, librispeech_root)
    check_combined(data, "dev", ["dev-clean", "dev-other"], librispeech_root)
    assert len(read_keys(data / train / "text")) == {"train_960": 9, "train_clean_100": 3}[train]
    # LM text: the training transcripts, then the LM text with ESPnet-style ids (empty lines dropped)
    extra = "librispeech_lng_00000001 THE FIRST BOOK SENTENCE\nlibrispeech_lng_00000003 AND A SECOND ONE\n"
    assert (data / "lm_train.txt").read_text() == (data / train / "text").read_text() + (extra if lm_args else "")


# --------------------------------------------------------------------------------------------------------------
# run.sh options


@pytest.mark.parametrize("corpus", list(RECIPES))
def test_options_fail_clearly(corpus, librispeech_root, tmp_path):
    data = tmp_path / "data"
    common = ["--datadir", str(data), "--expdir", str(tmp_path / "exp")]
    cases = [
        ([], "--librispeech_root DIR is required for stage 1"),
        (["--librispeech_root", str(tmp_path / "missing")],
         f"--librispeech_root {tmp_path / 'missing'}: no such directory"),
        (["--librispeech_root", str(librispeech_root), "--lm_text", str(tmp_path / "nope.gz")],
         f"--lm_text {tmp_path / 'nope.gz'}: no such file"),
        (["--librispeech_root", str(librispeech_root), "--no_such_option", "1"], "unknown option --no_such_option"),
        (["--librispeech_root", str(librispeech_root), "--nbpe"], "option --nbpe needs a value"),
        (["--librispeech_root"], "option --librispeech_root needs a value"),
    ]
    for args, message in cases:
        proc = run_recipe(corpus, *common, *args, cwd=tmp_path)
        assert proc.returncode != 0, (args, proc.stdout)
        assert message in proc.stderr, (args, proc.stderr)
    assert not data.exists()  # every failure came before any data preparation


def test_help_lists_both_levels():
    proc = run_recipe("librispeech", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--librispeech_root" in proc.stderr and "--lm_text" in proc.stderr  # run.sh's own options
    assert "--ngpu=0" in proc.stderr and "--asr_args=" in proc.stderr  # the stage driver's


def recipe_text(corpus: str) -> str:
    """A recipe's run.sh (its sets) followed by the body it sources, which runs in the recipe's directory."""
    run_sh = (RECIPES[corpus] / "run.sh").read_text()
    body = re.search(r'^\. "\$\(dirname "\$0"\)/(\S+)"$', run_sh, re.M).group(1)
    return run_sh + (RECIPES[corpus] / body).read_text()


def test_both_recipes_share_one_body():
    """The 100 h run.sh differs from the 960 h one only in its header and its sets: both source the same body."""
    bodies = {(RECIPES[c] / re.search(r'^\. "\$\(dirname "\$0"\)/(\S+)"$', (RECIPES[c] / "run.sh").read_text(),
                                     re.M).group(1)).resolve() for c in RECIPES}
    assert bodies == {RECIPES["librispeech"] / "local/librispeech.sh"}
    for corpus in RECIPES:
        lines = [l for l in (RECIPES[corpus] / "run.sh").read_text().splitlines() if l and not l.startswith("#")]
        assert [l.split("=")[0] for l in lines[1:-1]] == ["corpus_sets", "combine_sets", "train_set"], lines


@pytest.mark.parametrize("corpus", list(RECIPES))
def test_run_sh_names_existing_configs(corpus):
    """Every system run.sh trains has a config, and the LM/decoding configs it names exist."""
    text = recipe_text(corpus)
    systems = re.search(r'^ +--systems "([^"]+)"', text, re.M).group(1).split()
    assert systems == list(SYSTEMS)
    conf_dir = RECIPES[corpus] / re.search(r"--asr_config_dir (\S+)", text).group(1)
    assert conf_dir.resolve() == REPO / "egs" / corpus / "asr1" / "conf"
    assert sorted(p.name for p in conf_dir.glob("train_asr_*.yaml")) == sorted(f"train_asr_{s}.yaml" for s in SYSTEMS)
    for option in ("--lm_config", "--inference_config"):
        assert (RECIPES[corpus] / re.search(rf"{option} (\S+)", text).group(1)).is_file(), option
    # beam_ngram (--sf_decodings "beam_lm beam_ngram", README stage 9) reads asr.sh's default --ngram_config
    assert (RECIPES[corpus] / "conf" / "decode_ngram.yaml").is_file()
    # --teacher only relocates the configs' teacher (default: none, their bert-base-uncased); the configs own the rest
    shell = text + "".join(p.read_text() for p in sorted((REPO / "egs/librispeech/asr1/local").glob("*.sh")))
    assert "--nbpe 5000" in shell and "--teacher \"${teacher}\"" in shell and re.search(r"^teacher= ", shell, re.M)
    assert "--topk" not in shell and "--kd_temperature" not in shell
    assert '--test_sets "dev_clean dev_other test_clean test_other"' in text and "--valid_set dev " in text


# --------------------------------------------------------------------------------------------------------------
# configs


def load(corpus: str, system: str) -> Dict:
    return yaml.safe_load((REPO / "egs" / corpus / "asr1" / "conf" / f"train_asr_{system}.yaml").read_text())


@pytest.mark.parametrize("corpus", list(RECIPES))
def test_systems_differ_only_in_the_method(corpus):
    """Same data, epochs and encoder for every system (docs/method.md): configs agree outside model_conf and
    interctc's intermediate layer, and what asr.sh asks of each config (kd_requirements) matches the systems with
    KD decoders."""
    def shared(system):
        conf = load(corpus, system)
        conf.pop("model_conf")
        conf["encoder_conf"].pop("interctc_layer_idx", None)
        return conf

    base = shared("ctc")
    for system in SYSTEMS:
        assert shared(system) == base, system
        conf = load(corpus, system)
        mc = conf["model_conf"]
        assert conf["model"] == "bertkd" and mc["kd_layers"] == KD_LAYERS[system], system
        assert conf["best_model_criterion"] == [["valid", "cer_ctc", "min"]] and conf["keep_nbest_models"] == 10
        path = str(REPO / "egs" / corpus / "asr1" / "conf" / f"train_asr_{system}.yaml")
        assert requirements(path).mode == ("cached" if system in DECODER_SYSTEMS else "none"), system
        if system in DECODER_SYSTEMS:
            assert mc["teacher"] == {"model": "bert-base-uncased", "mode": "cached", "topk": 8, "temperature": 1.0}
            assert mc["kd_alpha"] == (0.0 if system == "aed" else 0.5) and 0 < mc["ctc_weight"] < 1
        else:
            assert mc["ctc_weight"] == 1.0
    assert load(corpus, "interctc")["encoder_conf"]["interctc_layer_idx"] == [6]
    assert load(corpus, "interctc")["model_conf"]["interctc_weight"] == 0.3
    enc = base["encoder_conf"]
    size = {"librispeech": (512, 8, 2048), "librispeech_100": (256, 4, 1024)}[corpus]
    assert (enc["output_size"], enc["attention_heads"], enc["linear_units"]) == size
    assert (enc["num_blocks"], enc["cnn_module_kernel"], enc["rel_pos_type"], enc["macaron_style"]) == (
        12, 31, "latest", True)
    assert base["max_epoch"] == {"librispeech": 50, "librispeech_100": 70}[corpus]
    assert base["batch_type"] == "numel" and base["specaug"] == "specaug"
    # ESPnet's convention: asr.sh adds --normalize global_mvn with the stats file (a config that names global_mvn
    # itself breaks stage 10 of ESPnet's own asr.sh)
    assert "normalize" not in base


@pytest.fixture
def one_thread():
    """One intra-op thread for the full-size steps: on a busy 2-core machine two OpenMP threads spin at every
    barrier and one 12 x 512 step took 35 s instead of 2 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def token_list(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens.txt"
    path.write_text("\n".join(TOKENS) + "\n")
    return path


@pytest.fixture(scope="module")
def stats_file(tmp_path_factory) -> Path:
    """global_mvn statistics for 80 log-mel bins (ESPnet's feats_stats.npz keys)."""
    path = tmp_path_factory.mktemp("stats") / "feats_stats.npz"
    count = 1000
    np.savez(path, count=np.array(count), sum=np.full(80, -5.0 * count), sum_square=np.full(80, 29.0 * count))
    return path


def parse_asr_config(corpus, system, token_list, stats_file, teacher_dir) -> argparse.Namespace:
    from espnet2.tasks.asr import ASRTask

    argv = ["--config", str(REPO / "egs" / corpus / "asr1" / "conf" / f"train_asr_{system}.yaml"), "--token_list", str(token_list),
            "--normalize", "global_mvn", "--normalize_conf", f"stats_file={stats_file}"]  # as asr.sh passes them
    if system in DECODER_SYSTEMS:  # as asr.sh passes --teacher: the tiny local teacher stands in for bert-base
        argv += ["--model_conf", f"teacher.model={teacher_dir}"]
    return ASRTask.get_parser().parse_args(argv)


def fake_batch(teacher_dir: str, topk: int) -> Dict:
    """Two utterances of 2 s and 1.5 s of random audio with the transcripts' character ids and soft labels."""
    texts = TEXTS[:2]
    g = torch.Generator().manual_seed(0)
    speech = 0.1 * torch.randn(2, 32000, generator=g)
    speech[1, 24000:] = 0.0
    text, text_lengths = encode_text(texts)
    return {"speech": speech, "speech_lengths": torch.tensor([32000, 24000]), "text": text,
            "text_lengths": text_lengths, "utt_id": ["utt0", "utt1"], **soft_label_kwargs(teacher_dir, texts, topk)}


@pytest.mark.parametrize("corpus,system", CONFIGS)
def test_config_builds_and_trains_one_step(corpus, system, token_list, stats_file, teacher_dir, one_thread):
    from espnet2.tasks.abs_task import scheduler_classes
    from espnet2.tasks.asr import ASRTask

    start = time.time()
    args = parse_asr_config(corpus, system, token_list, stats_file, teacher_dir)
    torch.manual_seed(0)
    model = ASRTask.build_model(args)
    built = time.time()
    assert type(model).__name__ == "ESPnetBertKDModel" and model.decoder is None  # a CTC model
    assert len(model.encoder.encoders) == 12 and model.encoder.output_size() == args.encoder_conf["output_size"]
    assert model.kd_layers == KD_LAYERS[system]
    if system in DECODER_SYSTEMS:
        assert len(model.kd_decoders) == len(KD_LAYERS[system]) and len(model.kd_decoders[0].decoders) == 3
        assert model.kd_loss.alpha == (0.0 if system == "aed" else 0.5)
    else:
        assert not hasattr(model, "kd_decoders")
    optimizer, = ASRTask.build_optimizers(args, model)
    scheduler = scheduler_classes[args.scheduler](optimizer, **args.scheduler_conf)
    assert type(optimizer).__name__ == "Adam" and optimizer.param_groups[0]["lr"] > 0

    batch = fake_batch(teacher_dir, topk=8)
    named = dict(model.named_parameters())
    watch = ["ctc.ctc_lo.weight", "encoder.encoders.0.self_attn.linear_q.weight",
             "encoder.encoders.11.feed_forward.w_1.weight"]
    watch += [n for n in named if n.startswith("kd_decoders.") and n.endswith("output_layer.weight")]
    before = {n: named[n].detach().clone() for n in watch}
    model.train()
    loss, stats, _ = model(**batch)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
    optimizer.step()
    scheduler.step()
    for n in watch:
        assert named[n].grad is not None and not torch.equal(named[n].detach(), before[n]), n
    assert all(torch.isfinite(p).all() for p in model.parameters())
    stepped = time.time()

    kd_keys = sorted(k for k in stats if k.startswith("loss_kd"))
    if system in DECODER_SYSTEMS:
        assert kd_keys == sorted(["loss_kd"] + [f"loss_kd_layer{l}" for l in KD_LAYERS[system]])
        assert all(torch.isfinite(stats[k]) for k in kd_keys)
    else:
        assert kd_keys == []
    assert ("loss_interctc_layer6" in stats) == (system == "interctc")

    # The teacher's probabilities move the loss in the KD systems only: permute each top-k distribution. In eval
    # mode (no dropout, no SpecAugment) the two passes differ in nothing else, so "unchanged" is exact.
    model.eval()
    with torch.no_grad():
        loss_ref, stats_ref, _ = model(**fake_batch(teacher_dir, topk=8))
        permuted = fake_batch(teacher_dir, topk=8)
        permuted["kd_prob"] = permuted["kd_prob"].flip(-1)
        loss_perm, stats_perm, _ = model(**permuted)
    assert torch.isfinite(loss_ref) and torch.equal(stats_ref["loss_ctc"], stats_perm["loss_ctc"])
    assert torch.equal(loss_ref, loss_perm) == (system not in KD_SYSTEMS), (loss_ref, loss_perm)
    if system in DECODER_SYSTEMS:
        assert torch.equal(stats_ref["loss_kd"], stats_perm["loss_kd"]) == (system == "aed")
    print(f"{corpus}/{system}: build {built - start:.1f} s, step {stepped - built:.1f} s, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")


def test_lm_config_trains_one_step(token_list, one_thread):
    from espnet2.tasks.abs_task import scheduler_classes
    from espnet2.tasks.lm import LMTask

    args = LMTask.get_parser().parse_args(["--config", str(REPO / "egs/librispeech/asr1/conf/train_lm_transformer.yaml"),
                                           "--token_list", str(token_list)])
    assert (args.lm_conf["layer"], args.lm_conf["att_unit"], args.lm_conf["head"]) == (16, 512, 8)
    torch.manual_seed(0)
    model = LMTask.build_model(args)
    optimizer, = LMTask.build_optimizers(args, model)
    scheduler = scheduler_classes[args.scheduler](optimizer, **args.scheduler_conf)
    text, lengths = encode_text(TEXTS[:2])
    text = text.masked_fill(text < 0, 0)
    weight = model.lm.decoder.weight
    before = weight.detach().clone()
    loss, _, _ = model(text, lengths)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    scheduler.step()
    assert not torch.equal(weight.detach(), before)


def test_decode_config_parses(tmp_path):
    from espnet2.bin.asr_inference import get_parser

    args = get_parser().parse_args(["--config", str(REPO / "egs/librispeech/asr1/conf/decode_sf.yaml"), "--output_dir", str(tmp_path),
                                    "--data_path_and_name_and_type", "wav.scp,speech,sound"])
    # a CTC-only model: CTC takes the whole weight (ESPnet's 0.3 is the CTC share against an attention decoder)
    assert (args.beam_size, args.ctc_weight, args.lm_weight, args.nbest) == (10, 1.0, 0.6, 1)


def test_ngram_decode_config_parses():
    """The lexicon search settings the LibriSpeech recipes give beam_ngram pass ctc_lm_inference's own checks."""
    from espnet_bertkd.bin.ctc_lm_inference import get_parser, search_options

    config = REPO / "egs/librispeech/asr1/conf/decode_ngram.yaml"
    args = get_parser().parse_args(["--decode_config", str(config), "--lm", "none", "--asr_train_config", "c.yaml",
                                    "--asr_model_file", "m.pth", "--data_path_and_name_and_type", "wav.scp,speech,sound",
                                    "--output_dir", "out"])
    options = search_options(args)
    assert (options["lm_weight"], options["word_score"], options["beam_size"], options["beam_threshold"]) == \
        (2.0, 1.0, 50, 25.0)


def test_rehearsal_projects_by_what_each_stage_reads(capsys):
    """local/rehearsal.py scales a stage's wall time by the data it reads, and tables every record in stage order."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rehearsal", REPO / "egs/librispeech_100/asr1/local/rehearsal.py")
    rehearsal = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rehearsal)
    corpus = {"hours": 960.9 / 10, "utterances": 28124, "words": 940355, "lm_words": 8.03e6, "test_hours": 2.14,
              "test_words": 210269 / 5}
    assert rehearsal.projection(2, 360.0, corpus, 2).startswith("1.0 h on 2 CPU cores (x10 audio)")
    assert rehearsal.projection(9, 36.0, corpus, 2).startswith("1.0 h on 2 CPU cores (x100 LM words)")
    assert rehearsal.projection(12, 120.0, corpus, 1).startswith("20 min per system")  # 120 s x 21.4 h / 2.14 h
    assert rehearsal.projection(8, 60.0, corpus, 1).startswith("5 min on 2 CPU cores for the four sets (x5 words)")
    record = {"stages": {k: {"wall_s": 60.0, "peak_rss_mib": 1024.0, "disk_mib": 2048.0, "projection_960h": k}
                         for k in ("12 beam_ngram", "10", "12", "2")}}
    rehearsal.print_table(record)
    rows = [line.split("|")[1].strip() for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows == ["2", "10", "12", "12 beam_ngram"]
