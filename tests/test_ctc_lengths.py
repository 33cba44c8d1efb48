"""Issue 24: transcripts longer than the CTC output allows are counted and named before training, and refused
when they are a large share (ESPnet's zero_infinity trained such a corpus to loss_ctc=0 without a word)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from espnet_bertkd.tasks.ctc_lengths import INPUT_LAYERS, ctc_frames_needed, encoder_frames, frontend_frames
from test_bad_input import preflight, recipe, train_argv, utt  # noqa: F401 (recipe: a fixture)
from test_bad_input import ASR_TRAIN


@pytest.mark.parametrize("layer", [k for k in INPUT_LAYERS if k not in ("embed",)])
def test_frame_arithmetic_matches_espnets_modules(layer):
    """The one place that knows ESPnet's input layers and front-end, pinned against them."""
    from espnet2.asr.encoder.e_branchformer_encoder import EBranchformerEncoder
    from espnet2.asr.frontend.default import DefaultFrontend
    from espnet_bertkd.compat import TooShortUttError

    frontend = DefaultFrontend(n_mels=20)
    encoder = EBranchformerEncoder(20, output_size=8, attention_heads=1, linear_units=8, cgmlp_linear_units=8,
                                   num_blocks=0, input_layer=layer)
    for samples in (1600, 2399, 4000, 8001, 16000):
        feats, lengths = frontend(torch.zeros(1, samples), torch.tensor([samples]))
        assert int(lengths[0]) == frontend_frames(samples, 128)
        try:
            _, out_lengths, _ = encoder(feats, lengths)
        except TooShortUttError:  # what ESPnet raises for an utterance shorter than its convolutions
            assert encoder_frames(int(lengths[0]), layer) == 0, (layer, samples)
            continue
        assert int(out_lengths[0]) == encoder_frames(int(lengths[0]), layer), (layer, samples)


def test_frames_needed_counts_blanks_between_repeats():
    assert ctc_frames_needed(list("abc")) == 3
    assert ctc_frames_needed(list("aab")) == 4
    assert ctc_frames_needed(["l", "l", "<space>", "o", "o"]) == 7


def shape_file(root: Path, samples: dict) -> Path:
    path = root / "speech_shape"
    path.write_text("".join(f"{u} {n}\n" for u, n in sorted(samples.items())))
    return path


def test_infeasible_utterances_are_named_and_refused_when_many(recipe, caplog, monkeypatch):
    """0.5 s utterances of 16 characters and more: conv2d (4x) leaves 15 frames."""
    texts = (recipe / "data/train/text").read_text().splitlines()
    ids = [line.split()[0] for line in texts]
    shapes = {u: 8000 for u in ids}
    argv = train_argv(recipe, "--train_shape_file", str(shape_file(recipe, shapes)),
                      "--encoder_conf", "input_layer=conv2d")
    with pytest.raises(ValueError) as e:
        preflight(ASR_TRAIN, argv)
    message = str(e.value)
    assert f"{len(ids)} of {len(ids)} training utterances (100.0%) have more tokens than CTC can align" in message
    assert f"{ids[0]} (15 frames for" in message and "zero_infinity" in message
    # one short utterance among long ones: trained, with a warning naming it
    shapes = {u: 160000 for u in ids}
    shapes[ids[1]] = 8000
    argv = train_argv(recipe, "--train_shape_file", str(shape_file(recipe, shapes)),
                      "--encoder_conf", "input_layer=conv2d")
    monkeypatch.setattr("espnet_bertkd.tasks.ctc_lengths.MAX_INFEASIBLE_SHARE", 0.5)
    with caplog.at_level("WARNING"):
        preflight(ASR_TRAIN, argv)
    assert f"1 of {len(ids)} training utterances" in caplog.text and f"{ids[1]} (15 frames for" in caplog.text


def test_utterances_too_short_for_the_input_layer_are_refused_whatever_their_share(recipe):
    """Issue 24: training with batch 1 raised TooShortUttError mid-epoch on a very short utterance."""
    ids = [line.split()[0] for line in (recipe / "data/train/text").read_text().splitlines()]
    shapes = {u: 160000 for u in ids}
    shapes[ids[2]] = 400  # 0.025 s: 4 front-end frames, none after conv2d
    argv = train_argv(recipe, "--train_shape_file", str(shape_file(recipe, shapes)),
                      "--encoder_conf", "input_layer=conv2d")
    with pytest.raises(ValueError, match=f"1 training utterances are too short for the encoder's input layer conv2d "
                                         rf"\(no frame left after it\): {ids[2]}"):
        preflight(ASR_TRAIN, argv)
