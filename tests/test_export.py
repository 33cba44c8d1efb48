"""export_ctc: a trained `model: bertkd` becomes a plain ESPnet model (KD decoders and teacher dropped)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from conftest import asr_train_args, batch, build_asr_model, kd_conf, write_trained
from espnet_bertkd.asr.export import ESPNET_MODEL_KEYS, export_config, export_ctc, export_state_dict

# Runs in a fresh interpreter with ESPnet alone: nothing of espnet_bertkd is imported (and the script checks it).
PLAIN_ESPNET = textwrap.dedent(
    """
    import json, sys
    import torch
    from espnet2.tasks.asr import ASRTask

    cfg, pth, inputs, out = sys.argv[1:]
    model, args = ASRTask.build_model_from_file(cfg, pth, "cpu")
    result = model.load_state_dict(torch.load(pth, map_location="cpu"), strict=True)
    model.eval()
    speech, lengths = torch.load(inputs)
    with torch.no_grad():
        enc, enc_lens = model.encode(speech, lengths)
        torch.save({"log_probs": model.ctc.log_softmax(enc), "lengths": enc_lens}, out)
    print(json.dumps({
        "params": sum(p.numel() for p in model.parameters()),
        "type": type(model).__name__,
        "decoder": model.decoder is not None,
        "plugin_imported": any(m.startswith("espnet_bertkd") for m in sys.modules),
        "missing_unexpected": [list(result.missing_keys), list(result.unexpected_keys)],
    }))
    """
)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_export_ctc_loads_in_plain_espnet(tmp_path, teacher_dir):
    model, config, cfg, pth = write_trained(tmp_path, teacher_dir)
    assert any(k.startswith("kd_decoders.") for k in model.state_dict())
    out_cfg, out_pth, params = export_ctc(str(cfg), str(pth), str(tmp_path / "export"))

    exported = yaml.safe_load(out_cfg.read_text(encoding="utf-8"))
    assert exported["model"] == "espnet"
    assert exported["model_conf"]["ctc_weight"] == 1.0
    assert set(exported["model_conf"]) <= ESPNET_MODEL_KEYS
    assert not [k for k in exported["model_conf"] if k.startswith("kd_") or k == "teacher"]
    assert "teacher" not in out_cfg.read_text(encoding="utf-8")
    assert exported["decoder"] is None
    # Everything else of the training config is kept (encoder, token list, features).
    for key in ("encoder", "encoder_conf", "token_list", "input_size", "normalize", "frontend"):
        assert exported[key] == config[key], key

    state = torch.load(out_pth, map_location="cpu")
    assert not [k for k in state if k.startswith(("kd_", "decoder."))]
    original = model.state_dict()
    for k, v in state.items():
        assert torch.equal(v, original[k]), k

    # Plain ESPnet, in a process that never imports the plugin.
    baseline = build_asr_model("conformer", {"ctc_weight": 1.0}, model="espnet")
    torch.manual_seed(5)
    b = batch()
    inputs = tmp_path / "inputs.pt"
    torch.save((b["speech"].clone(), b["speech_lengths"]), inputs)
    posteriors = tmp_path / "posteriors.pt"
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN_ESPNET, str(out_cfg), str(out_pth), str(inputs), str(posteriors)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["plugin_imported"] is False
    assert report["type"] == "ESPnetASRModel"
    assert report["decoder"] is False
    assert report["missing_unexpected"] == [[], []]
    assert report["params"] == params == n_params(baseline)
    assert n_params(model) > params  # the KD decoders were dropped

    model.eval()
    with torch.no_grad():
        enc, enc_lens = model.encode(b["speech"], b["speech_lengths"])
        expected = model.ctc.log_softmax(enc)
    got = torch.load(posteriors)
    assert torch.equal(got["lengths"], enc_lens)
    assert got["log_probs"].shape == expected.shape
    assert torch.allclose(got["log_probs"], expected, atol=1e-5)


def test_export_keeps_an_ordinary_decoder_and_interctc(tmp_path, teacher_dir):
    from espnet2.asr.espnet_model import ESPnetASRModel
    from espnet2.tasks.asr import ASRTask

    conf = kd_conf(teacher_dir, interctc_weight=0.3)
    model, config, cfg, pth = write_trained(
        tmp_path, teacher_dir, decoder="transformer", encoder_conf={"interctc_layer_idx": [1]}, model_conf=conf
    )
    assert model.encoder.interctc_layer_idx == [1, 2]
    out_cfg, out_pth, params = export_ctc(str(cfg), str(pth), str(tmp_path / "export"))
    exported = yaml.safe_load(out_cfg.read_text(encoding="utf-8"))
    assert exported["model"] == "espnet" and exported["decoder"] == "transformer"
    assert exported["decoder_conf"] == config["decoder_conf"]
    assert exported["model_conf"]["ctc_weight"] == 0.3 and exported["model_conf"]["interctc_weight"] == 0.3
    assert exported["encoder_conf"]["interctc_layer_idx"] == [1]

    state = torch.load(out_pth, map_location="cpu")
    original = model.state_dict()
    decoder_keys = [k for k in original if k.startswith("decoder.")]
    assert decoder_keys and all(torch.equal(state[k], original[k]) for k in decoder_keys)
    assert not [k for k in state if k.startswith("kd_")]

    plain, _ = ASRTask.build_model_from_file(str(out_cfg), str(out_pth), "cpu")
    assert type(plain) is ESPnetASRModel and plain.decoder is not None
    plain.load_state_dict(state, strict=True)
    assert params == n_params(plain)
    assert plain.encoder.interctc_layer_idx == [1]
    plain.eval()
    model.eval()
    b1, b2 = batch(), batch()
    with torch.no_grad():
        (ours, ours_inter), _ = model.encode(b1["speech"], b1["speech_lengths"])
        (theirs, theirs_inter), _ = plain.encode(b2["speech"], b2["speech_lengths"])
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert [l for l, _ in ours_inter] == [l for l, _ in theirs_inter] == [1]
    assert torch.allclose(ours_inter[0][1], theirs_inter[0][1], atol=1e-5)


def test_export_refuses_a_plain_espnet_config(tmp_path):
    with pytest.raises(ValueError, match="bertkd"):
        export_config({"model": "espnet", "model_conf": {"ctc_weight": 1.0}})
    config = asr_train_args("conformer", {"ctc_weight": 1.0}, model="espnet")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    baseline = build_asr_model("conformer", {"ctc_weight": 1.0}, model="espnet")
    torch.save(baseline.state_dict(), tmp_path / "model.pth")
    with pytest.raises(ValueError, match="model: 'espnet'"):
        export_ctc(str(tmp_path / "config.yaml"), str(tmp_path / "model.pth"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_training_checkpoint(tmp_path, teacher_dir):
    model, _, cfg, pth = write_trained(tmp_path, teacher_dir)
    checkpoint = tmp_path / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "optimizers": [], "reporter": {}}, checkpoint)
    with pytest.raises(ValueError, match="checkpoint"):
        export_ctc(str(cfg), str(checkpoint), str(tmp_path / "out"))


def test_export_refuses_mismatched_weights(tmp_path, teacher_dir):
    """A model file that does not belong to the config fails loudly (ESPnet itself would load it partially)."""
    _, _, cfg, pth = write_trained(tmp_path, teacher_dir)
    state = torch.load(pth, map_location="cpu")
    state.pop(next(k for k in state if k.startswith("encoder.encoders.0.")))
    torch.save(state, pth)
    with pytest.raises(RuntimeError, match="missing"):
        export_ctc(str(cfg), str(pth), str(tmp_path / "out"))


def test_export_state_dict_drops_only_training_modules(teacher_dir):
    model = build_asr_model("conformer", kd_conf(teacher_dir, kd_decoder_dim=8))
    state = model.state_dict()
    assert any(k.startswith("kd_projections.") for k in state)
    kept = export_state_dict(state)
    assert set(kept) == {k for k in state if not k.startswith(("kd_decoders.", "kd_projections."))}
    baseline = build_asr_model("conformer", {"ctc_weight": 1.0}, model="espnet")
    assert set(kept) == set(baseline.state_dict())
