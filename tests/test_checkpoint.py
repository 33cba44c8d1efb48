"""Strict model loading for decoding: a model file that does not match its config fails with the keys at fault
(ESPnet's build_model_from_file would load it partially and silently), except the training-only KD decoders."""
from __future__ import annotations

import pytest
import torch

from espnet_bertkd.asr.checkpoint import build_model_checked, key_mismatch, strict_model_loading
from espnet_bertkd.asr.export import export_ctc
from test_export import kd_conf, write_trained


def test_key_mismatch_ignores_training_only_modules():
    assert key_mismatch(["a", "kd_decoders.0.w"], ["a"]) == ([], [])
    assert key_mismatch(["a"], ["a", "kd_projections.0.w"]) == ([], [])
    assert key_mismatch(["a", "b"], ["a", "c"]) == (["b"], ["c"])


def test_matching_file_loads_and_mismatched_file_names_the_keys(tmp_path, teacher_dir):
    model, _, cfg, pth = write_trained(tmp_path, teacher_dir)
    loaded, _ = build_model_checked(str(cfg), str(pth))
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k

    state = torch.load(pth, map_location="cpu")
    dropped = sorted(k for k in state if k.startswith("encoder.encoders.1."))
    for k in dropped:
        state[k.replace("encoders.1.", "encoders.9.")] = state.pop(k)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(ValueError) as err:
        build_model_checked(str(cfg), str(bad))
    message = str(err.value)
    assert str(bad) in message and str(cfg) in message
    assert f"{len(dropped)} key(s) of the model are missing" in message and dropped[0] in message
    assert "not in the model: encoder.encoders.9." in message


def test_exported_file_with_the_training_config_is_accepted(tmp_path, teacher_dir):
    """The exported model has no KD decoders; decoding it with the training config needs none."""
    _, _, cfg, pth = write_trained(tmp_path, teacher_dir)
    _, exported, _ = export_ctc(str(cfg), str(pth), str(tmp_path / "export"))
    model, _ = build_model_checked(str(cfg), str(exported))
    assert hasattr(model, "kd_decoders")


def test_training_checkpoint_is_refused(tmp_path, teacher_dir):
    model, _, cfg, _ = write_trained(tmp_path, teacher_dir)
    checkpoint = tmp_path / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "optimizers": [], "reporter": {}}, checkpoint)
    with pytest.raises(ValueError, match="training checkpoint"):
        build_model_checked(str(cfg), str(checkpoint))


def test_strict_loading_patches_espnet_only_inside(tmp_path, teacher_dir):
    from espnet2.tasks.asr import ASRTask

    _, _, cfg, pth = write_trained(tmp_path, teacher_dir)
    (tmp_path / "other").mkdir()
    _, _, other_cfg, _ = write_trained(tmp_path / "other", teacher_dir, model_conf=kd_conf(teacher_dir, kd_layers=[2]),
                                     encoder_conf={"num_blocks": 2})
    before = ASRTask.build_model_from_file
    ASRTask.build_model_from_file(str(other_cfg), str(pth), "cpu")  # ESPnet alone: silently partial
    with strict_model_loading(), pytest.raises(ValueError, match="does not match"):
        ASRTask.build_model_from_file(str(other_cfg), str(pth), "cpu")
    assert "build_model_from_file" not in ASRTask.__dict__ and ASRTask.build_model_from_file == before
