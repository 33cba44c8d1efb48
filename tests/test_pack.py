"""pack_ctc and upload_hf: a bertkd run becomes an ESPnet model zip that decodes anywhere with ESPnet alone.

The run is built, not trained (conftest.write_trained): a raw-waveform bertkd model with global MVN stats, a
sentencepiece model and a token-list file, named by the config partly relatively (from the recipe directory, as
ESPnet writes them) and partly absolutely. After packing, the recipe directory is deleted; a fresh interpreter that
never imports espnet_bertkd unpacks the zip with ESPnet's own unpack and decodes with ESPnet's Speech2Text, and must
give ctc_greedy_inference's hypotheses of the original run.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import types
import zipfile
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import soundfile
import torch
import yaml

from conftest import TEXTS, asr_train_args, write_trained
from espnet_bertkd.bin import ctc_greedy_inference, pack_ctc
from espnet_bertkd.kd.teacher import load_teacher_vocab_size
from espnet_bertkd.recipe.bin import upload_hf
from espnet_bertkd.recipe.tokens import train_bpe

REPO = Path(__file__).resolve().parents[1]
RATE = 16000
EXP = "exp/asr_kd"
MODEL_FILE = "valid.cer_ctc.ave.pth"
BPE_DIR = "data/token_list/bpe_unigram30"

# Runs in a fresh interpreter with ESPnet alone: unpack with ESPnet's unpack, then Speech2Text's model, converter and
# tokenizer; greedy CTC over its encoder output (argmax, repeats merged, blank and <sos/eos> dropped).
UNPACK_AND_DECODE = textwrap.dedent(
    """
    import json, sys
    import soundfile, torch
    from espnet2.bin.asr_inference import Speech2Text
    from espnet2.main_funcs.pack_funcs import unpack

    zip_path, out_dir, wav_scp = sys.argv[1:]
    files = unpack(zip_path, out_dir)
    s2t = Speech2Text(**files, device="cpu", beam_size=1, ctc_weight=1.0)
    model = s2t.asr_model
    drop = {model.blank_id, model.sos, model.eos}
    hyps = {}
    for line in open(wav_scp, encoding="utf-8"):
        key, path = line.split(maxsplit=1)
        speech = torch.tensor(soundfile.read(path.strip(), dtype="float32")[0]).unsqueeze(0)
        with torch.no_grad():
            enc, lens = model.encode(speech, torch.tensor([speech.shape[1]]))
        enc = enc[0] if isinstance(enc, tuple) else enc
        ids = torch.unique_consecutive(model.ctc.argmax(enc)[0, : int(lens[0])]).tolist()
        ids = [i for i in ids if i not in drop]
        hyps[key] = {"token_int": ids, "text": s2t.tokenizer.tokens2text(s2t.converter.ids2tokens(ids))}
    print(json.dumps({
        "hyps": hyps,
        "files": files,
        "type": type(model).__name__,
        "decoder": model.decoder is not None,
        "stats_file": str(model.normalize.stats_file),
        "tokenizer": repr(s2t.tokenizer),
        "plugin_imported": sorted(m for m in sys.modules if m.startswith("espnet_bertkd")),
    }))
    """
)


def write_wavs(directory: Path, n: int = 3, seed: int = 3) -> Path:
    """A wav.scp of short synthetic 16 kHz waveforms (noise + tones)."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        samples = int(RATE * (0.5 + 0.2 * i))
        x = 0.1 * rng.standard_normal(samples) + 0.3 * np.sin(2 * np.pi * (180 + 60 * i) * np.arange(samples) / RATE)
        path = directory / f"utt{i}.wav"
        soundfile.write(path, x.astype(np.float32), RATE)
        lines.append(f"utt{i} {path}")
    (directory / "wav.scp").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory / "wav.scp"


def write_stats(path: Path, dim: int = 20, seed: int = 4) -> None:
    """Global MVN stats as ESPnet's collect-stats writes them (count, sum, sum_square), far from zero mean/unit var,
    so decoding without them would give other posteriors."""
    rng = np.random.default_rng(seed)
    count, mean, var = 1000.0, rng.normal(3.0, 1.0, dim), rng.uniform(0.5, 4.0, dim)
    path.parent.mkdir(parents=True)
    np.savez(path, count=np.array(count), sum=mean * count, sum_square=(var + mean**2) * count)


def read_hyps(decode_dir: Path) -> Dict[str, Dict]:
    """ESPnet's 1best_recog/{text,token_int} as {key: {"token_int": [...], "text": "..."}}."""
    def table(name: str) -> Dict[str, str]:
        rows = (line.split(maxsplit=1) for line in (decode_dir / "1best_recog" / name).read_text().splitlines())
        return {r[0]: (r[1] if len(r) > 1 else "") for r in rows}

    texts, ints = table("text"), table("token_int")
    return {k: {"token_int": [int(i) for i in ints[k].split()], "text": texts[k]} for k in texts}


def one_line_exit(exit_info: pytest.ExceptionInfo, prog: str) -> str:
    message = str(exit_info.value.code)
    assert message.startswith(f"{prog}: ") and "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, teacher_dir) -> Dict:
    """Build the run in ROOT/recipe, decode it with ctc_greedy_inference, pack it, move the zip to ROOT/shipped and
    delete the recipe directory (so only the archive's own files can serve)."""
    root = tmp_path_factory.mktemp("pack")
    recipe = root / "recipe"
    wav_scp = write_wavs(root / "wavs")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        text = root / "text"
        text.write_text("".join(f"u{i} {t}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
        train_bpe([text], recipe / BPE_DIR, vocab_size=30)
        stats = recipe / "exp/asr_stats_raw_bpe30/train/feats_stats.npz"
        write_stats(stats)
        mp.chdir(recipe)  # the config's relative paths are relative to the recipe directory, as ESPnet writes them
        config = {
            "token_type": "bpe", "token_list": f"{BPE_DIR}/tokens.txt", "bpemodel": f"{BPE_DIR}/bpe.model",
            "normalize": "global_mvn", "normalize_conf": {"stats_file": str(stats)},
            "output_dir": EXP, "train_shape_file": [str(stats.parent / "speech_shape")],
            "train_data_path_and_name_and_type": [[str(root / "data/train/wav.scp"), "speech", "sound"]],
        }
        model, config, cfg, pth = write_trained(recipe, teacher_dir, input_size=None, config=config,
                                                train_dir=EXP, model_file=MODEL_FILE)
        (recipe / EXP / "RESULTS.md").write_text("## RESULTS\n\n|dataset|WER|\n|---|---|\n|test|12.3|\n")
        ctc_greedy_inference.main(["--asr_train_config", f"{EXP}/config.yaml", "--asr_model_file",
                                   f"{EXP}/{MODEL_FILE}", "--data_path_and_name_and_type", f"{wav_scp},speech,sound",
                                   "--output_dir", str(root / "greedy"), "--batch_size", "2"])
        pack_ctc.main(["--asr_train_config", f"{EXP}/config.yaml", "--asr_model_file", f"{EXP}/{MODEL_FILE}",
                       "--outpath", f"{EXP}/packed/asr_model.zip", "--readme_extra", f"{EXP}/RESULTS.md"])
        packed_dir = recipe / EXP / "packed"
        leftovers = sorted(p.name for p in packed_dir.iterdir() if p.name != "asr_model.zip")
        (root / "shipped").mkdir()
        zip_path = Path(shutil.move(str(packed_dir / "asr_model.zip"), str(root / "shipped")))
    shutil.rmtree(recipe)
    return {"root": root, "zip": zip_path, "wav_scp": wav_scp, "greedy": read_hyps(root / "greedy"),
            "config": config, "leftovers": leftovers, "state": model.state_dict()}


def zip_text(zip_path: Path, member: str) -> str:
    with zipfile.ZipFile(zip_path) as z:
        return z.read(member).decode("utf-8")


def test_packed_config_names_only_archive_members(shipped):
    with zipfile.ZipFile(shipped["zip"]) as z:
        names = set(z.namelist())
        state = torch.load(z.open(f"exp/asr_kd/{MODEL_FILE}"), map_location="cpu", weights_only=True)
    assert names == {"meta.yaml", "README.md", f"{EXP}/config.yaml", f"{EXP}/{MODEL_FILE}",
                     "exp/asr_stats/train/feats_stats.npz", "data/token_list/tokens.txt", "data/token_list/bpe.model"}
    assert shipped["leftovers"] == []  # no temporary zip or staging directory left beside the output
    meta = yaml.safe_load(zip_text(shipped["zip"], "meta.yaml"))
    assert meta["yaml_files"] == {"asr_train_config": f"{EXP}/config.yaml"}
    assert meta["files"] == {"asr_model_file": f"{EXP}/{MODEL_FILE}"}

    text = zip_text(shipped["zip"], f"{EXP}/config.yaml")
    assert str(shipped["root"]) not in text and "teacher" not in text  # nothing of the training machine
    config = yaml.safe_load(text)
    assert config["model"] == "espnet" and config["decoder"] is None and config["model_conf"]["ctc_weight"] == 1.0
    assert config["normalize_conf"]["stats_file"] == "exp/asr_stats/train/feats_stats.npz"
    assert config["token_list"] == "data/token_list/tokens.txt" and config["bpemodel"] == "data/token_list/bpe.model"
    assert config["train_data_path_and_name_and_type"] == [] and config["train_shape_file"] == []
    assert config["output_dir"] is None
    for key in ("encoder", "encoder_conf", "frontend_conf", "token_type", "normalize"):
        assert config[key] == shipped["config"][key], key
    # the archive's weights: the run's, less the KD decoders
    original = shipped["state"]
    assert set(state) == {k for k in original if not k.startswith(("kd_decoders.", "kd_projections."))}
    assert all(torch.equal(v, original[k]) for k, v in state.items())


def test_readme_names_teacher_kd_settings_and_version(shipped, teacher_dir):
    readme = zip_text(shipped["zip"], "README.md")
    assert f"teacher: `{teacher_dir}`" in readme
    assert f"vocabulary of {load_teacher_vocab_size(teacher_dir)} tokens" in readme
    assert "mode `cached`, top-k 4, temperature 1.0" in readme
    assert "- `kd_layers`: `[2, 3]`" in readme and "- `ctc_weight`: `0.3`" in readme
    assert "- `kd_alpha`: `0.5` (default)" in readme
    assert "|test|12.3|" in readme  # --readme_extra
    from espnet_bertkd import __version__

    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = head.stdout.strip() if head.returncode == 0 else "unknown"
    assert f"espnet-bertkd {__version__}, git commit {commit}" in readme


def test_source_commit_is_unknown_outside_a_checkout(tmp_path):
    package = tmp_path / "espnet_bertkd"
    package.mkdir()
    assert pack_ctc.source_commit(package) == "unknown"


def test_unpacked_zip_decodes_in_plain_espnet_like_ctc_greedy_inference(shipped):
    root = shipped["root"]
    assert not (root / "recipe").exists()
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    out = root / "unpacked"
    proc = subprocess.run(
        [sys.executable, "-c", UNPACK_AND_DECODE, str(shipped["zip"]), str(out), str(shipped["wav_scp"])],
        cwd=elsewhere, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["plugin_imported"] == []
    assert report["type"] == "ESPnetASRModel" and report["decoder"] is False
    assert report["files"] == {"asr_train_config": str(out / EXP / "config.yaml"),
                               "asr_model_file": str(out / EXP / MODEL_FILE)}
    assert report["stats_file"] == str(out / "exp/asr_stats/train/feats_stats.npz")
    assert str(out / "data/token_list/bpe.model") in report["tokenizer"]
    unpacked = yaml.safe_load((out / EXP / "config.yaml").read_text())
    assert unpacked["token_list"] == str(out / "data/token_list/tokens.txt")

    greedy = shipped["greedy"]
    assert sorted(greedy) == ["utt0", "utt1", "utt2"]
    assert any(h["token_int"] for h in greedy.values())  # not all empty: the comparison below means something
    assert report["hyps"] == greedy


def test_pack_plain_espnet_config_as_it_is(tmp_path, monkeypatch, capsys):
    """A `model: espnet` run (the baseline without KD) is packed unchanged but for its paths; a bpemodel that its
    token type does not use (asr.sh passes one for char too) is dropped."""
    config = {"token_type": "char", "bpemodel": "data/token_list/bpe_unigram30/bpe.model", "output_dir": "exp/ctc"}
    model, args, cfg, pth = write_trained(tmp_path, "unused", model_conf={"ctc_weight": 1.0},
                                          config={**config, "model": "espnet"}, train_dir="exp/ctc")
    monkeypatch.chdir(tmp_path)
    pack_ctc.main(["--asr_train_config", "exp/ctc/config.yaml", "--asr_model_file", str(pth),
                   "--outpath", "ctc.zip"])
    assert "wrote" in capsys.readouterr().out
    packed = yaml.safe_load(zip_text(tmp_path / "ctc.zip", "exp/ctc/config.yaml"))
    assert packed["model"] == "espnet" and packed["model_conf"] == {"ctc_weight": 1.0}
    assert packed["bpemodel"] is None and packed["output_dir"] is None
    assert packed["token_list"] == args["token_list"]  # a list in the config: nothing to pack
    with zipfile.ZipFile(tmp_path / "ctc.zip") as z:
        assert set(z.namelist()) == {"meta.yaml", "README.md", "exp/ctc/config.yaml", "exp/ctc/valid.loss.best.pth"}
        state = torch.load(z.open("exp/ctc/valid.loss.best.pth"), map_location="cpu", weights_only=True)
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    readme = zip_text(tmp_path / "ctc.zip", "README.md")
    assert "without knowledge distillation" in readme and "teacher" not in readme


@pytest.fixture
def kd_run(tmp_path, teacher_dir, monkeypatch):
    """A small bertkd run (feature input, char tokens) and the directory the commands run in."""
    monkeypatch.chdir(tmp_path)
    _, _, cfg, pth = write_trained(tmp_path, teacher_dir, config={"token_type": "char"})
    return cfg, pth


def pack_refused(argv: List[str]) -> str:
    with pytest.raises(SystemExit) as e:
        pack_ctc.main(argv)
    return one_line_exit(e, "pack_ctc")


def test_pack_refuses_bad_inputs_in_one_line(kd_run, tmp_path):
    cfg, pth = kd_run
    out = tmp_path / "out" / "model.zip"
    base = ["--asr_train_config", str(cfg), "--asr_model_file", str(pth), "--outpath", str(out)]
    config = yaml.safe_load(cfg.read_text())

    def variant(name: str, **changes) -> str:
        path = tmp_path / name
        path.write_text(yaml.safe_dump({**config, **changes}), encoding="utf-8")
        return str(path)

    assert "model: 'espnet_other'" in pack_refused(["--asr_train_config", variant("other.yaml", model="espnet_other"),
                                                    *base[2:]])
    message = pack_refused(["--asr_train_config", variant(
        "stats.yaml", normalize="global_mvn", normalize_conf={"stats_file": "exp/stats/feats_stats.npz"}), *base[2:]])
    assert "normalize_conf.stats_file: no such file 'exp/stats/feats_stats.npz'" in message
    assert "recipe directory" in message
    assert "bpemodel" in pack_refused(["--asr_train_config", variant("bpe.yaml", token_type="bpe", bpemodel=None),
                                       *base[2:]])
    assert ".zip" in pack_refused([*base[:-1], str(tmp_path / "out" / "model.tar.gz")])
    checkpoint = tmp_path / "checkpoint.pth"
    torch.save({"model": torch.load(pth), "optimizers": [], "reporter": {}}, checkpoint)
    assert "checkpoint" in pack_refused([*base[:2], "--asr_model_file", str(checkpoint), *base[4:]])
    state = torch.load(pth)
    state.pop(next(k for k in state if k.startswith("encoder.encoders.0.")))
    torch.save(state, tmp_path / "partial.pth")
    assert "missing" in pack_refused([*base[:2], "--asr_model_file", str(tmp_path / "partial.pth"), *base[4:]])
    assert "No such file" in pack_refused(["--asr_train_config", str(tmp_path / "absent.yaml"), *base[2:]])
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_pack_failure_keeps_the_previous_zip(kd_run, tmp_path, monkeypatch):
    """ESPnet's pack failing half-way leaves the old archive in place and no temporary file or directory."""
    import espnet2.main_funcs.pack_funcs as pack_funcs

    cfg, pth = kd_run
    out = tmp_path / "out" / "model.zip"
    out.parent.mkdir()
    out.write_bytes(b"previous")

    def broken_pack(files, yaml_files, outpath, option=()):
        Path(outpath).write_bytes(b"half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(pack_funcs, "pack", broken_pack)
    assert "disk full" in pack_refused(["--asr_train_config", str(cfg), "--asr_model_file", str(pth),
                                        "--outpath", str(out)])
    assert out.read_bytes() == b"previous"
    assert [p.name for p in out.parent.iterdir()] == ["model.zip"]


def test_upload_dry_run_builds_the_folder_and_uploads_nothing(shipped, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # importing it would fail: no upload is attempted
    repo_dir = tmp_path / "hf_user_bertkd"
    upload_hf.main(["--packed_zip", str(shipped["zip"]), "--hf_repo", "user/bertkd-ctc", "--repo_dir",
                    str(repo_dir), "--lang", "en", "--dry_run", "true"])
    out = capsys.readouterr().out
    assert "https://huggingface.co/user/bertkd-ctc" in out
    listed = sorted(line.split()[0] for line in out.splitlines()[1:])
    assert listed == sorted(["README.md", "meta.yaml", f"{EXP}/config.yaml", f"{EXP}/{MODEL_FILE}",
                             "exp/asr_stats/train/feats_stats.npz", "data/token_list/tokens.txt",
                             "data/token_list/bpe.model"])
    card = (repo_dir / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["language"] == "en" and "espnet" in front["tags"] and front["license"] == "cc-by-4.0"
    assert zip_text(shipped["zip"], "README.md").strip() in card  # the packed README, quoted whole
    assert 'Speech2Text.from_pretrained("user/bertkd-ctc"' in card and "mono, 16000 Hz" in card
    # the config as packed: relative member names, which the downloader points at its copies
    assert (repo_dir / EXP / "config.yaml").read_text() == zip_text(shipped["zip"], f"{EXP}/config.yaml")


def fake_hub(calls: List, error: Exception | None = None) -> types.ModuleType:
    class HfApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            if error is not None:
                raise error
            calls.append(("upload_folder", kwargs))
            return types.SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc")

    return types.SimpleNamespace(HfApi=HfApi)


def test_upload_sends_the_folder_with_upload_folder(shipped, tmp_path, monkeypatch, capsys):
    calls: List = []
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake_hub(calls))
    repo_dir = tmp_path / "repo"
    upload_hf.main(["--packed_zip", str(shipped["zip"]), "--hf_repo", "user/bertkd-ctc", "--repo_dir", str(repo_dir)])
    assert calls[0] == ("create_repo", "user/bertkd-ctc", {"repo_type": "model", "exist_ok": True})
    assert calls[1][0] == "upload_folder"
    assert calls[1][1]["repo_id"] == "user/bertkd-ctc" and calls[1][1]["folder_path"] == str(repo_dir)
    assert "commit/abc" in capsys.readouterr().out

    monkeypatch.setitem(sys.modules, "huggingface_hub", fake_hub([], OSError("401 Client Error\nUnauthorized")))
    with pytest.raises(SystemExit) as e:
        upload_hf.main(["--packed_zip", str(shipped["zip"]), "--hf_repo", "user/bertkd-ctc", "--repo_dir",
                        str(repo_dir)])
    assert "401 Client Error" in one_line_exit(e, "upload_hf")


def test_upload_refuses_bad_inputs_in_one_line(shipped, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    not_packed = tmp_path / "plain.zip"
    with zipfile.ZipFile(not_packed, "w") as z:
        z.writestr("model.pth", b"")
    cases = [
        (["--packed_zip", str(shipped["zip"]), "--hf_repo", "no-namespace"], "not a Hugging Face repo id"),
        (["--packed_zip", str(shipped["zip"]), "--hf_repo", "user/a--b"], "not a Hugging Face repo id"),
        (["--packed_zip", str(tmp_path / "absent.zip"), "--hf_repo", "user/x"], "missing or not a zip file"),
        (["--packed_zip", str(not_packed), "--hf_repo", "user/x"], "no meta.yaml"),
    ]
    for argv, expected in cases:
        with pytest.raises(SystemExit) as e:
            upload_hf.main([*argv, "--repo_dir", str(tmp_path / "repo"), "--dry_run", "true"])
        assert expected in one_line_exit(e, "upload_hf"), argv
    assert not (tmp_path / "repo").exists()
