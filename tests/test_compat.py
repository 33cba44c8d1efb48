"""The compatibility module knows the installed ESPnet release: each difference it absorbs is pinned here, so the
suite fails on a release whose internals moved (run on 202511/Python 3.11 and 202611/Python 3.12 in CI)."""
from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from conftest import build_asr_model
from espnet_bertkd import compat

RELEASE = compat.espnet_version()
NEW = RELEASE >= "202611"


def test_the_installed_release_is_supported():
    assert RELEASE in compat.SUPPORTED_RELEASES


def test_legacy_nets_come_from_where_the_release_keeps_them():
    assert compat.nets_package() == ("espnet2.legacy.nets" if NEW else "espnet.nets")
    for name in ("th_accuracy", "add_sos_eos", "LabelSmoothingLoss"):
        assert getattr(compat, name).__module__.startswith(compat.nets_package() + ".pytorch_backend"), name
    with pytest.raises(AttributeError):
        compat.no_such_name  # noqa: B018


def test_release_features():
    from espnet2.bin.asr_inference import Speech2Text

    assert compat.speech2text_decodes_batches() == NEW == hasattr(Speech2Text, "batch_decode")
    assert compat.convolutions_mask_padding() == NEW


def test_filtered_output_keeps_everything_but_the_noise(capsys):
    with compat._output_without(compat.IMPORT_NOISE):
        print("Failed to import Flash Attention, using ESPnet default: No module named 'flash_attn'")
        print("[nltk_data] Error loading cmudict: <urlopen error>", file=sys.stderr)
        print("kept on stdout")
        print("kept on stderr", file=sys.stderr)
    out, err = capsys.readouterr()
    assert out == "kept on stdout\n" and err == "kept on stderr\n"


def test_importing_espnet_through_the_plugin_prints_no_noise():
    """ESPnet alone prints a Flash-Attention notice (and offline nltk download errors); after `import espnet_bertkd`
    (every entry point of the plugin, `espnet_bertkd.launch` included) importing ESPnet's LM and ASR tasks prints
    neither, and the plugin is registered."""
    code = ("import espnet_bertkd, espnet2.tasks.lm, espnet2.tasks.asr\n"
            "print('registered', 'bertkd' in espnet2.tasks.asr.model_choices.classes)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = done.stdout + done.stderr
    assert "registered True" in done.stdout
    assert "Flash Attention" not in printed and "[nltk_data]" not in printed


def test_kd_model_does_not_claim_its_decoder_was_dropped(caplog, teacher_dir):
    """ESPnet logs "Set decoder to none as ctc_weight==1.0" for the ctc_weight the plugin passes it internally; the
    KD model's ctc_weight is 0.5, so the message would be wrong there. A real ctc_weight 1.0 keeps ESPnet's word."""
    caplog.set_level(logging.WARNING)
    model = build_asr_model("conformer", {"ctc_weight": 0.5, "kd_layers": [2], "teacher": {"model": teacher_dir},
                                          "kd_decoder_conf": {"num_blocks": 1, "linear_units": 16}})
    assert model.ctc_weight == 0.5 and len(model.kd_decoders) == 1
    assert compat.DECODER_NONE_WARNING not in caplog.messages
    build_asr_model("conformer", {"ctc_weight": 1.0}, model="espnet", decoder="transformer")
    assert compat.DECODER_NONE_WARNING in caplog.messages


def test_batch_size_auto_resolves_per_release_and_device():
    from espnet_bertkd.bin.asr_inference import AUTO_BATCH_SIZE, auto_batch_size, resolve_batch_size

    assert auto_batch_size(decodes_batches=True, ngpu=1) == AUTO_BATCH_SIZE
    assert auto_batch_size(decodes_batches=True, ngpu=0) == 1  # batched search is the slower one on a CPU
    assert auto_batch_size(decodes_batches=False, ngpu=1) == 1  # 202511 has none
    argv = ["--beam_size", "10", "--batch_size", "auto", "--output_dir", "auto"]  # a directory named "auto" stays
    assert resolve_batch_size(argv, 16) == ["--beam_size", "10", "--batch_size", "16", "--output_dir", "auto"]
    assert resolve_batch_size(["--batch_size=auto"], 4) == ["--batch_size=4"]
