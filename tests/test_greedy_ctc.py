"""Batched greedy CTC decoding equals a per-utterance argmax/collapse reference, whatever the batching and padding."""
from __future__ import annotations

import itertools
from typing import List

import pytest
import torch

from conftest import build_asr_model
from espnet_bertkd.asr.greedy_ctc import (
    GreedyCTCDecoder,
    collapse,
    encode_every_layer,
    frontend_features,
    length_sorted_batches,
    padding_exact_encoder,
)
from espnet_bertkd.compat import convolutions_mask_padding

# ESPnet's recipes use the "latest" relative positions; the legacy ones depend on the padded length (see greedy_ctc).
CONFORMER = {"num_blocks": 2, "rel_pos_type": "latest", "pos_enc_layer_type": "rel_pos",
             "selfattention_layer_type": "rel_selfattn"}
ENCODER_CONF = {"conformer": CONFORMER, "e_branchformer": {"num_blocks": 2}, "transformer": {"num_blocks": 2}}
LENGTHS = [9000, 4100, 7300, 2600, 8800, 5000]  # samples at 16 kHz: mixed, so batches carry padding


def sharpen(model):
    """Random models emit one token everywhere; a larger CTC output scale gives varied, tie-free paths."""
    with torch.no_grad():
        model.ctc.ctc_lo.weight.mul_(30.0)
    return model.eval()


def waveforms(seed: int = 0) -> List[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g) * 0.3 for n in LENGTHS]


def reference(model, wave: torch.Tensor) -> List[int]:
    """What ESPnet computes for one utterance alone: encode, CTC argmax per frame, merge repeats, drop blanks."""
    with torch.no_grad():
        enc, _ = model.encode(wave[None].clone(), torch.tensor([wave.numel()]))
        if isinstance(enc, tuple):
            enc = enc[0]
        ids = model.ctc.argmax(enc)[0].tolist()
    return [k for k, _ in itertools.groupby(ids) if k not in (model.blank_id, model.sos, model.eos)]


def decode(decoder: GreedyCTCDecoder, waves: List[torch.Tensor], batch_size: int) -> List[List[int]]:
    out = {}
    lengths = {i: w.numel() for i, w in enumerate(waves)}
    for batch in length_sorted_batches(lengths, batch_size=batch_size):
        speech = torch.nn.utils.rnn.pad_sequence([waves[i] for i in batch], batch_first=True)
        results = decoder(speech, torch.tensor([lengths[i] for i in batch]))
        out.update({i: r.token_int for i, r in zip(batch, results)})
    return [out[i] for i in range(len(waves))]


@pytest.mark.parametrize("encoder", ["conformer", "e_branchformer", "transformer"])
def test_batched_greedy_equals_per_utterance_reference(encoder):
    model = sharpen(build_asr_model(encoder, {"ctc_weight": 1.0}, model="espnet", input_size=None,
                                    encoder_conf=ENCODER_CONF[encoder]))
    waves = waveforms()
    expected = [reference(model, w) for w in waves]
    assert sum(len(e) for e in expected) > 20 and len({tuple(e) for e in expected}) == len(waves)
    decoder = GreedyCTCDecoder(model)
    for batch_size in (1, 2, 4, len(waves)):
        assert decode(decoder, waves, batch_size) == expected, f"batch_size={batch_size}"


def test_padding_would_leak_without_masked_convolutions():
    """Under ESPnet 202511 the conformer's convolution module reads padded frames and the decoder's masking is what
    makes batches exact; 202611 masks them itself, where the decoder's masking changes nothing."""
    model = sharpen(build_asr_model("conformer", {"ctc_weight": 1.0}, model="espnet", input_size=None,
                                    encoder_conf=CONFORMER))
    decoder = GreedyCTCDecoder(model)
    waves = waveforms()[:2]  # 9000 and 4100 samples: the second is heavily padded in a batch
    speech = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    lengths = torch.tensor([w.numel() for w in waves])
    alone, alone_len, _ = decoder.encode(waves[1][None], lengths[1:])
    batched, _, _ = decoder.encode(speech, lengths)
    n = int(alone_len[0])
    assert torch.allclose(batched[1, :n], alone[0, :n], atol=1e-5)

    import espnet_bertkd.asr.greedy_ctc as greedy

    original = greedy.padding_exact_encoder
    try:
        greedy.padding_exact_encoder = lambda m: torch.no_grad()  # no masking
        leaky, _, _ = decoder.encode(speech, lengths)
    finally:
        greedy.padding_exact_encoder = original
    leak = (leaky[1, :n] - alone[0, :n]).abs().max()
    if convolutions_mask_padding():
        assert leak < 1e-5
    else:
        assert leak > 1e-4


def capture_output(module: torch.nn.Module) -> List[torch.Tensor]:
    outputs: List[torch.Tensor] = []
    module.register_forward_hook(lambda _m, _i, out: outputs.append(out[0]))
    return outputs


def test_batched_front_end_equals_each_utterance_alone():
    """ESPnet's default front-end on a batch framed once (reflect-padded at each utterance's own ends, one uncentred
    STFT): every utterance's STFT frames are bit-identical to ESPnet's centred STFT of that utterance alone, with the
    same frame count, and its filterbank features equal up to float32 rounding (the mel matmul runs over the batch,
    as every encoder layer does); padded frames are zero and the batch took one STFT call. This pins the ESPnet
    internals the batched path uses: DefaultFrontend's `stft`, Stft's `center` and its frame-count formula."""
    model = sharpen(build_asr_model("conformer", {"ctc_weight": 1.0}, model="espnet", input_size=None,
                                    encoder_conf=CONFORMER))
    stft = model.frontend.stft
    lengths = LENGTHS + [stft.n_fft // 2 + 1, 300]  # + the shortest an utterance can be, and one of a few frames
    g = torch.Generator().manual_seed(3)
    waves = [torch.randn(n, generator=g) * 0.3 for n in lengths]
    speech = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    decoder = GreedyCTCDecoder(model)
    frames = capture_output(stft)
    feats, feat_lengths = decoder.features(speech, torch.tensor(lengths))
    assert len(frames) == 1 and stft.center  # one framing for the batch; the Stft is centred again afterwards
    batch_frames = frames.pop()
    for i, wave in enumerate(waves):
        with torch.no_grad():
            alone, alone_lengths = frontend_features(model, wave[None], torch.tensor([wave.numel()]))
        n = int(alone_lengths[0])
        assert int(feat_lengths[i]) == n == alone.size(1) == frames[-1].size(1)
        assert torch.equal(batch_frames[i, :n], frames[-1][0]), f"STFT of utterance {i} ({wave.numel()} samples)"
        torch.testing.assert_close(feats[i, :n], alone[0], rtol=1e-6, atol=1e-6)
        assert not feats[i, n:].any()


def test_front_end_without_centred_stft_runs_per_utterance():
    """A front-end the batched framing does not cover (here an uncentred STFT; also S3PRL, WPE, beamformers ...) runs
    one utterance at a time, as before: the same features as alone."""
    model = sharpen(build_asr_model("conformer", {"ctc_weight": 1.0}, model="espnet", input_size=None,
                                    encoder_conf=CONFORMER))
    stft = model.frontend.stft
    stft.center = False
    waves = waveforms()[:3]
    speech = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    frames = capture_output(stft)
    feats, feat_lengths = GreedyCTCDecoder(model).features(speech, torch.tensor([w.numel() for w in waves]))
    assert len(frames) == len(waves) and not stft.center
    for i, wave in enumerate(waves):
        with torch.no_grad():
            alone, _ = frontend_features(model, wave[None], torch.tensor([wave.numel()]))
        assert int(feat_lengths[i]) == alone.size(1) and torch.equal(feats[i, : alone.size(1)], alone[0])


def test_plugin_model_decodes_intermediate_layers(teacher_dir):
    model = sharpen(build_asr_model(
        "conformer",
        {"ctc_weight": 0.5, "kd_layers": [1, 3], "teacher": {"model": teacher_dir, "mode": "online"},
         "kd_decoder_conf": {"num_blocks": 1, "linear_units": 32, "attention_heads": 2}},
        input_size=None, encoder_conf={**CONFORMER, "num_blocks": 3}))
    decoder = GreedyCTCDecoder(model, interctc_layers=[1, 2])
    waves = waveforms(1)[:3]
    speech = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    results = decoder(speech, torch.tensor([w.numel() for w in waves]))
    assert [r.token_int for r in results] == [reference(model, w) for w in waves]
    for r, w in zip(results, waves):
        assert set(r.interctc) == {1, 2}
        with torch.no_grad():
            enc, lens, layers = model.encode_layers(w[None].clone(), torch.tensor([w.numel()]))
        ids = model.ctc.argmax(layers[2])[0].tolist()
        assert r.interctc[2] == [k for k, _ in itertools.groupby(ids) if k not in (model.blank_id, model.sos)]


def test_espnet_encode_is_frontend_then_encoder_path(teacher_dir):
    """The ESPnet internals greedy decoding touches, all in greedy_ctc's `frontend_features` (the private
    `_extract_feats`) and `encode_every_layer` (`ESPnetASRModel.encode` unbound): together they compute exactly what
    the model's own encoding computes, and for a `model: bertkd` model the unbound call differs from the plugin's
    `encode` only in keeping the KD layers that the plugin hides from ESPnet's asr_inference."""
    model = sharpen(build_asr_model(
        "conformer",
        {"ctc_weight": 0.5, "kd_layers": [1, 3], "teacher": {"model": teacher_dir, "mode": "online"},
         "kd_decoder_conf": {"num_blocks": 1, "linear_units": 32, "attention_heads": 2}},
        input_size=None, encoder_conf={**CONFORMER, "num_blocks": 3}))
    wave = waveforms(2)[0][None]
    lengths = torch.tensor([wave.size(1)])
    frontend = model.frontend
    with torch.no_grad():
        feats, feat_lengths = frontend_features(model, wave, lengths)
        out, out_lengths, layers = encode_every_layer(model, feats, feat_lengths)
        expected, expected_lengths, expected_layers = model.encode_layers(wave, lengths)
        plugin_out, plugin_lengths = model.encode(wave, lengths)
    assert model.frontend is frontend  # detached for the call only
    assert feats.shape[1] == int(feat_lengths[0]) > 0 and feats.shape[1] < wave.shape[1]  # features, not samples
    assert torch.equal(out, expected) and torch.equal(out_lengths, expected_lengths)
    assert set(layers) == set(expected_layers) == {1}  # KD layer 1 (layer 3 is the final output)
    assert torch.equal(layers[1], expected_layers[1])
    assert torch.equal(plugin_out, expected) and torch.equal(plugin_lengths, expected_lengths)  # no layers, no tuple


def test_collapse_hand_example():
    # frames: a a _ a b b _ _ b (blank = 0): -> a a b b; padded frames beyond length 9 ignored
    ids = [1, 1, 0, 1, 2, 2, 0, 0, 2, 1, 1]
    logp = torch.full((1, len(ids), 4), -10.0)
    for t, i in enumerate(ids):
        logp[0, t, i] = -0.5
    tokens, scores = collapse(logp, torch.tensor([9]), exclude=[0, 3])
    assert tokens == [[1, 1, 2, 2]]
    assert scores.tolist() == pytest.approx([-4.5])


def test_length_sorted_batches():
    lengths = {"a": 10, "b": 50, "c": 30, "d": 20}
    assert length_sorted_batches(lengths, batch_size=2) == [["b", "c"], ["d", "a"]]
    assert length_sorted_batches(lengths, batch_samples=60) == [["b"], ["c", "d"], ["a"]]
    with pytest.raises(ValueError, match="batch"):
        length_sorted_batches(lengths)
