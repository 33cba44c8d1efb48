"""ESPnetBertKDModel (`model: bertkd`): losses, gradients, the ESPnet reduction, inference view, config errors."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from conftest import (
    SMALL_KD_DECODER,
    TEXTS,
    asr_train_args,
    batch,
    build_asr_model,
    kd_model_conf,
    soft_label_kwargs,
)
from espnet_bertkd.asr.bertkd_model import ESPnetBertKDModel
from espnet_bertkd.kd.soft_labels import KD_PROB, KD_TOKEN

ENCODERS = ["conformer", "transformer", "e_branchformer"]
KD_STATS = ["loss_ctc", "loss_kd_layer1", "acc_kd_layer1", "loss_kd_layer3", "acc_kd_layer3", "loss"]


@pytest.fixture(scope="module")
def teacher_vocab(teacher_dir) -> int:
    from espnet_bertkd.kd.teacher import load_teacher_vocab_size

    return load_teacher_vocab_size(teacher_dir)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def has_grad(module: torch.nn.Module) -> bool:
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    return bool(grads) and any(g is not None and g.abs().sum() > 0 for g in grads)


def speech():
    b = batch()
    return b["speech"], b["speech_lengths"]


def cached_batch(teacher_dir, texts=TEXTS[:3], **kw):
    b = batch(texts, **kw)
    b.update(soft_label_kwargs(teacher_dir, texts))
    return b


def assert_stats_equal(a, b):
    assert list(a) == list(b)
    for k in a:
        if a[k] is None or b[k] is None:
            assert a[k] is None and b[k] is None, k
        else:
            assert torch.allclose(a[k], b[k], atol=1e-6, equal_nan=True), (k, a[k], b[k])


# ------------------------------------------------------------------------------------------------- forward/backward
@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("mode", ["online", "cached"])
def test_forward_backward(teacher_dir, teacher_vocab, encoder, mode):
    model = build_asr_model(encoder, kd_model_conf(teacher_dir, mode))
    assert isinstance(model, ESPnetBertKDModel)
    assert model.kd_layers == [1, 3] and len(model.kd_decoders) == 2
    b = cached_batch(teacher_dir) if mode == "cached" else batch()
    loss, stats, weight = model(**b)
    assert torch.isfinite(loss).all() and loss.item() > 0
    assert int(weight) == 3
    for key in KD_STATS:
        assert stats.get(key) is not None, key
        assert torch.isfinite(stats[key]).all(), key
    assert stats["loss_ctc"].item() > 0  # 200 frames: CTC is feasible, the loss is a real number
    assert 0.0 <= stats["acc_kd_layer1"].item() <= 1.0
    loss.sum().backward()
    assert has_grad(model.encoder.encoders[0])
    for decoder in model.kd_decoders:
        assert has_grad(decoder)
        assert has_grad(decoder.output_layer)  # the teacher-vocabulary projection learns
    # KD decoders predict the teacher vocabulary + <sos/eos>, not the CTC tokens.
    assert model.kd_decoders[0].output_layer.out_features == teacher_vocab + 1


@pytest.mark.parametrize("encoder", ENCODERS)
def test_each_kd_decoder_reads_its_own_layer(teacher_dir, encoder):
    """Changing block 3 changes the layer-3 KD loss but not the layer-1 one (which sees block 1's output)."""
    model = build_asr_model(encoder, kd_model_conf(teacher_dir, "cached")).eval()
    with torch.no_grad():
        _, before, _ = model(**cached_batch(teacher_dir))
        for p in model.encoder.encoders[2].parameters():
            p.add_(0.5 * torch.randn_like(p))
        _, after, _ = model(**cached_batch(teacher_dir))
    assert torch.allclose(before["loss_kd_layer1"], after["loss_kd_layer1"])
    assert not torch.allclose(before["loss_kd_layer3"], after["loss_kd_layer3"])
    assert not torch.allclose(before["loss_ctc"], after["loss_ctc"])


@pytest.mark.parametrize("encoder", ENCODERS)
def test_online_and_cached_give_the_same_loss(teacher_dir, encoder):
    online = build_asr_model(encoder, kd_model_conf(teacher_dir, "online"))
    cached = build_asr_model(encoder, kd_model_conf(teacher_dir, "cached"))
    cached.load_state_dict(online.state_dict(), strict=True)
    online(**batch())  # loads the teacher, which may draw random numbers; the compared runs start from one seed
    torch.manual_seed(1)
    loss_online, stats_online, _ = online(**batch())
    torch.manual_seed(1)
    loss_cached, stats_cached, _ = cached(**cached_batch(teacher_dir))
    assert torch.allclose(loss_online, loss_cached)
    assert_stats_equal(stats_online, stats_cached)
    # The same seed again but another batch: a loss that ignored the teacher or the inputs would not move.
    torch.manual_seed(1)
    loss_other, _, _ = cached(**cached_batch(teacher_dir, TEXTS[3:]))
    assert not torch.allclose(loss_other, loss_cached)


def test_online_texts_are_the_transcripts(teacher_dir):
    model = build_asr_model("transformer", kd_model_conf(teacher_dir, "online"))
    b = batch()
    assert model._online.texts(b["text"], b["text_lengths"]) == TEXTS[:3]


# ----------------------------------------------------------------------------------------------- kd_layers: [] == ESPnet
REDUCTION_CASES = {
    "ctc": dict(model_conf={"ctc_weight": 1.0}),
    "interctc": dict(
        model_conf={"ctc_weight": 1.0, "interctc_weight": 0.5}, encoder_conf={"interctc_layer_idx": [1, 2]}
    ),
    "ctc_att": dict(model_conf={"ctc_weight": 0.3}, decoder="transformer"),
}


@pytest.mark.parametrize("case", sorted(REDUCTION_CASES))
@pytest.mark.parametrize("train", [False, True])
def test_empty_kd_layers_is_exactly_espnet(case, train):
    kw = REDUCTION_CASES[case]
    model_conf = kw["model_conf"]
    espnet = build_asr_model("conformer", model_conf, "espnet", kw.get("encoder_conf"), kw.get("decoder"))
    ours = build_asr_model(
        "conformer", {**model_conf, "kd_layers": []}, "bertkd", kw.get("encoder_conf"), kw.get("decoder")
    )
    assert type(espnet).__name__ == "ESPnetASRModel" and isinstance(ours, ESPnetBertKDModel)
    assert list(ours.state_dict()) == list(espnet.state_dict())
    ours.load_state_dict(espnet.state_dict(), strict=True)
    espnet.train(train)
    ours.train(train)
    torch.manual_seed(3)
    loss_e, stats_e, w_e = espnet(**batch())
    torch.manual_seed(3)
    loss_o, stats_o, w_o = ours(**batch())
    assert torch.allclose(loss_e, loss_o) and int(w_e) == int(w_o)
    assert_stats_equal(stats_e, stats_o)
    if case == "interctc":
        assert "loss_interctc_layer1" in stats_o and "loss_interctc_layer2" in stats_o
    if case == "ctc_att":
        assert stats_o["loss_att"] is not None
    loss_o.backward()
    assert has_grad(ours.encoder.encoders[0])


def test_kd_keys_are_visible_to_espnet_config_tools():
    """`--print_config` and ESPnet's config validation read the constructor signature."""
    from espnet2.utils.get_default_kwargs import get_default_kwargs

    defaults = get_default_kwargs(ESPnetBertKDModel)
    assert defaults["kd_layers"] == [] and defaults["teacher"] is None and defaults["kd_alpha"] == 0.5
    assert "ctc_weight" in defaults and "interctc_weight" in defaults
    yaml.safe_dump(defaults)  # writable to config.yaml


def test_empty_kd_layers_default_config_is_espnet():
    """No KD key at all (model: bertkd with ESPnet's model_conf only) builds ESPnet's model."""
    espnet = build_asr_model("transformer", {"ctc_weight": 1.0}, "espnet")
    ours = build_asr_model("transformer", {"ctc_weight": 1.0}, "bertkd")
    assert list(ours.state_dict()) == list(espnet.state_dict())
    assert n_params(ours) == n_params(espnet)


# --------------------------------------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("ctc_weight", [0.3, 0.7])
def test_total_loss_formula(teacher_dir, ctc_weight):
    model = build_asr_model("conformer", kd_model_conf(teacher_dir, "cached", ctc_weight=ctc_weight))
    loss, stats, _ = model(**cached_batch(teacher_dir))
    kd_mean = (stats["loss_kd_layer1"] + stats["loss_kd_layer3"]) / 2
    expected = ctc_weight * stats["loss_ctc"] + (1 - ctc_weight) * kd_mean
    assert torch.allclose(loss.detach(), expected, rtol=1e-5)
    assert torch.allclose(stats["loss_kd"], kd_mean, rtol=1e-5)
    assert stats["loss_att"] is None


def test_total_loss_formula_with_attention_decoder(teacher_dir):
    c = 0.4
    model = build_asr_model("conformer", kd_model_conf(teacher_dir, "cached", ctc_weight=c), decoder="transformer")
    assert model.decoder is not None and model.decoder.output_layer.out_features == len(model.token_list)
    loss, stats, _ = model(**cached_batch(teacher_dir))
    assert stats["loss_att"] is not None
    mean = (stats["loss_att"] + stats["loss_kd_layer1"] + stats["loss_kd_layer3"]) / 3
    assert torch.allclose(loss.detach(), c * stats["loss_ctc"] + (1 - c) * mean, rtol=1e-5)
    loss.backward()
    assert has_grad(model.decoder) and all(has_grad(d) for d in model.kd_decoders)


def test_total_loss_formula_with_interctc(teacher_dir):
    c, b = 0.3, 0.5
    model = build_asr_model(
        "conformer", kd_model_conf(teacher_dir, "cached", ctc_weight=c, interctc_weight=b),
        encoder_conf={"interctc_layer_idx": [2]},
    )
    loss, stats, _ = model(**cached_batch(teacher_dir))
    # InterCTC is computed at the user's layer only, not at the KD layer 1 that the encoder also returns.
    assert "loss_interctc_layer2" in stats and "loss_interctc_layer1" not in stats
    ctc = (1 - b) * stats["loss_ctc"] + b * stats["loss_interctc_layer2"]
    kd = (stats["loss_kd_layer1"] + stats["loss_kd_layer3"]) / 2
    assert torch.allclose(loss.detach(), c * ctc + (1 - c) * kd, rtol=1e-5)


def test_kd_alpha_zero_ignores_teacher_distributions(teacher_dir):
    """a = 0: a plain auxiliary decoder on the teacher's tokens; the top-k ids/probabilities do not matter."""
    b = cached_batch(teacher_dir)
    scrambled = dict(b)
    scrambled[KD_TOKEN] = b[KD_TOKEN].clone()
    scrambled[KD_TOKEN][..., 1:] = torch.where(b[KD_TOKEN][..., 1:] >= 0, 7, -1)
    scrambled[KD_PROB] = torch.where(b[KD_PROB] > 0, 0.25, 0.0)
    losses = {}
    for alpha in (0.0, 0.5):
        model = build_asr_model("transformer", kd_model_conf(teacher_dir, "cached", kd_alpha=alpha))
        model.eval()
        with torch.no_grad():
            losses[alpha] = [model(**copy.deepcopy(x))[0] for x in (b, scrambled)]
        assert all(torch.isfinite(l).all() for l in losses[alpha])
    assert torch.allclose(losses[0.0][0], losses[0.0][1])
    assert not torch.allclose(losses[0.5][0], losses[0.5][1])


def test_kd_alpha_zero_trains(teacher_dir):
    model = build_asr_model("conformer", kd_model_conf(teacher_dir, "online", kd_alpha=0.0))
    loss, stats, _ = model(**batch())
    assert torch.isfinite(loss).all() and stats["loss_kd_layer3"].item() > 0
    loss.backward()
    assert all(has_grad(d) for d in model.kd_decoders)


def test_kd_alpha_out_of_range(teacher_dir):
    with pytest.raises(ValueError, match="kd_alpha"):
        build_asr_model("transformer", kd_model_conf(teacher_dir, "cached", kd_alpha=1.5))


# ------------------------------------------------------------------------------------------------- decoder options
def test_shared_decoder(teacher_dir):
    unshared = build_asr_model("conformer", kd_model_conf(teacher_dir, "cached"))
    shared = build_asr_model("conformer", kd_model_conf(teacher_dir, "cached", kd_share_decoder=True))
    assert len(shared.kd_decoders) == 1 and len(unshared.kd_decoders) == 2
    assert n_params(unshared) - n_params(shared) == n_params(shared.kd_decoders[0])
    loss, stats, _ = shared(**cached_batch(teacher_dir))
    assert "loss_kd_layer1" in stats and "loss_kd_layer3" in stats
    loss.backward()
    assert has_grad(shared.kd_decoders[0]) and has_grad(shared.encoder.encoders[0])


def test_kd_decoder_dim_adds_projections(teacher_dir):
    model = build_asr_model("conformer", kd_model_conf(teacher_dir, "cached", kd_decoder_dim=8))
    assert len(model.kd_projections) == 2
    for proj in model.kd_projections:
        assert isinstance(proj, torch.nn.Linear) and (proj.in_features, proj.out_features) == (16, 8)
    loss, stats, _ = model(**cached_batch(teacher_dir))
    assert torch.isfinite(loss).all()
    loss.backward()
    assert all(has_grad(p) for p in model.kd_projections)
    # Without kd_decoder_dim the decoder works at the encoder width: no projection parameters.
    plain = build_asr_model("conformer", kd_model_conf(teacher_dir, "cached"))
    assert all(isinstance(p, torch.nn.Identity) for p in plain.kd_projections)


def test_kd_decoder_conf_reaches_the_decoder(teacher_dir):
    model = build_asr_model(
        "transformer", kd_model_conf(teacher_dir, "cached", kd_decoder_conf={**SMALL_KD_DECODER, "num_blocks": 2})
    )
    assert all(len(d.decoders) == 2 for d in model.kd_decoders)


# ------------------------------------------------------------------------------------------------------ the teacher
def test_teacher_is_not_part_of_the_model(teacher_dir):
    model = build_asr_model("conformer", kd_model_conf(teacher_dir, "online"))
    keys_before, params_before = list(model.state_dict()), n_params(model)
    loss, _, _ = model(**batch())
    loss.backward()
    assert model._online.teacher is not None  # the teacher did run
    keys = list(model.state_dict())
    assert keys == keys_before
    assert not [k for k in keys if "teacher" in k.lower() or "bert" in k.lower()]
    assert n_params(model) == params_before
    assert not [n for n, _ in model.named_modules() if "teacher" in n.lower() or "bert" in n.lower()]
    teacher_params = {id(p) for p in model._online.teacher.model.parameters()}
    assert not teacher_params & {id(p) for p in model.parameters()}
    assert all(not p.requires_grad for p in model._online.teacher.model.parameters())


def test_vocab_size_given_needs_no_teacher(tmp_path):
    missing = str(tmp_path / "no_such_teacher")
    model = build_asr_model(
        "conformer", kd_model_conf(missing, "cached", teacher={"model": missing, "mode": "cached", "vocab_size": 50})
    )
    assert model.kd_vocab_size == 51 and model.kd_sos_eos == 50
    assert model.kd_decoders[0].output_layer.out_features == 51


def test_missing_teacher_without_vocab_size(tmp_path):
    missing = str(tmp_path / "no_such_teacher")
    with pytest.raises(OSError, match="local directory"):
        build_asr_model("conformer", kd_model_conf(missing, "cached"))


# ----------------------------------------------------------------------------------------------- ESPnet inference
def test_encode_hides_kd_layers(teacher_dir):
    model = build_asr_model("conformer", kd_model_conf(teacher_dir, "cached")).eval()
    assert model.encoder.interctc_layer_idx == [1]
    # Fresh inputs per call: with no frontend ESPnet's UtteranceMVN normalises the features in place.
    with torch.no_grad():
        out, lens = model.encode(*speech())
        final, lens2, layers = model.encode_layers(*speech())
    assert isinstance(out, torch.Tensor) and out.dim() == 3 and out.size(-1) == 16
    assert torch.equal(out, final) and torch.equal(lens, lens2)
    assert sorted(layers) == [1] and layers[1].shape == out.shape


def test_encode_returns_only_user_interctc_layers(teacher_dir):
    model = build_asr_model(
        "conformer", kd_model_conf(teacher_dir, "cached", interctc_weight=0.3),
        encoder_conf={"interctc_layer_idx": [2]},
    ).eval()
    assert model.encoder.interctc_layer_idx == [1, 2]
    with torch.no_grad():
        (out, inter), _ = model.encode(*speech())
        final, _, layers = model.encode_layers(*speech())
    assert [l for l, _ in inter] == [2]
    assert torch.equal(inter[0][1], layers[2]) and torch.equal(out, final)
    assert sorted(layers) == [1, 2]


def test_final_layer_only_needs_no_intermediate_output(teacher_dir):
    model = build_asr_model("transformer", kd_model_conf(teacher_dir, "cached", kd_layers=[3]))
    assert model.encoder.interctc_layer_idx == []
    loss, stats, _ = model(**cached_batch(teacher_dir))
    assert torch.isfinite(loss).all() and "loss_kd_layer3" in stats and "loss_kd_layer1" not in stats


def test_decoder_attribute_is_espnets_own(teacher_dir):
    model = build_asr_model("conformer", kd_model_conf(teacher_dir, "cached"))
    assert model.decoder is None
    assert model.ctc is not None and model.ctc_weight == 0.3


def test_speech2text_decodes_a_bertkd_model(teacher_dir, tmp_path):
    """ESPnet's own inference loads the training config and decodes with CTC alone."""
    from espnet2.bin.asr_inference import Speech2Text

    conf = kd_model_conf(teacher_dir, "cached", interctc_weight=0.3)
    model = build_asr_model("conformer", conf, encoder_conf={"interctc_layer_idx": [2]})
    config = asr_train_args("conformer", conf, encoder_conf={"interctc_layer_idx": [2]})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    torch.save(model.state_dict(), tmp_path / "model.pth")
    s2t = Speech2Text(
        str(tmp_path / "config.yaml"), str(tmp_path / "model.pth"), beam_size=1, ctc_weight=1.0, lm_weight=0.0,
        nbest=1,
    )
    assert isinstance(s2t.asr_model, ESPnetBertKDModel)
    nbest, interctc = s2t(batch()["speech"][0])
    # ESPnet greedily decodes every intermediate output encode() shows it: the user's layer 2, not KD layer 1.
    assert list(interctc) == [2]
    assert len(nbest) == 1
    text, tokens, token_ids = nbest[0][:3]
    assert isinstance(tokens, list) and all(0 <= t < len(model.token_list) for t in token_ids)


# ----------------------------------------------------------------------------------------------------- bad configs
def test_unknown_model_conf_key(teacher_dir):
    conf = kd_model_conf(teacher_dir, "cached")
    conf["kd_layer"] = conf.pop("kd_layers")
    with pytest.raises((TypeError, ValueError), match="kd_layer"):
        build_asr_model("conformer", conf)


@pytest.mark.parametrize("layers", [[0], [4], [1, 4]])
def test_kd_layers_out_of_range(teacher_dir, layers):
    with pytest.raises(ValueError, match=r"kd_layers.*1\.\.3"):
        build_asr_model("conformer", kd_model_conf(teacher_dir, "cached", kd_layers=layers))


def test_kd_layers_duplicated(teacher_dir):
    with pytest.raises(ValueError, match="kd_layers"):
        build_asr_model("conformer", kd_model_conf(teacher_dir, "cached", kd_layers=[2, 2]))


def test_kd_layers_without_teacher(teacher_dir):
    conf = kd_model_conf(teacher_dir, "cached")
    del conf["teacher"]
    with pytest.raises(ValueError, match="teacher"):
        build_asr_model("conformer", conf)


@pytest.mark.parametrize("ctc_weight", [1.0, 0.0])
def test_kd_layers_need_both_weights(teacher_dir, ctc_weight):
    with pytest.raises(ValueError, match="ctc_weight"):
        build_asr_model("conformer", kd_model_conf(teacher_dir, "cached", ctc_weight=ctc_weight))


def test_unknown_teacher_key(teacher_dir):
    teacher = {"model": teacher_dir, "mode": "cached", "top_k": 4}
    with pytest.raises(ValueError, match="top_k"):
        build_asr_model("conformer", kd_model_conf(teacher_dir, "cached", teacher=teacher))


def test_bad_teacher_mode(teacher_dir):
    with pytest.raises(ValueError, match="teacher.mode"):
        build_asr_model("conformer", kd_model_conf(teacher_dir, teacher={"model": teacher_dir, "mode": "offline"}))


def test_bad_kd_decoder_conf(teacher_dir):
    with pytest.raises(ValueError, match="kd_decoder_conf"):
        build_asr_model("conformer", kd_model_conf(teacher_dir, "cached", kd_decoder_conf={"num_layers": 1}))


def test_cached_labels_beyond_the_vocabulary_name_the_utterance(teacher_dir, teacher_vocab):
    model = build_asr_model("conformer", kd_model_conf(teacher_dir, "cached"))
    b = cached_batch(teacher_dir)
    b[KD_TOKEN][1, 0, 2] = teacher_vocab  # one top-k id of utt1 outside the teacher vocabulary
    with pytest.raises(ValueError, match="utt1"):
        model(**b)


def test_teacher_vocab_size_mismatch_names_the_utterance(tmp_path, teacher_dir):
    """Soft labels from the test teacher fed to a model configured for a 40-token teacher."""
    teacher = {"model": str(tmp_path / "other"), "mode": "cached", "topk": 4, "vocab_size": 40}
    model = build_asr_model("conformer", kd_model_conf(teacher_dir, "cached", teacher=teacher))
    b = cached_batch(teacher_dir)
    lengths = b[f"{KD_TOKEN}_lengths"]
    first_bad = next(
        i for i in range(len(lengths)) if (b[KD_TOKEN][i, : lengths[i]] >= 40).any()
    )
    with pytest.raises(ValueError, match=rf"'{b['utt_id'][first_bad]}'.*40"):
        model(**b)


def test_cached_mode_without_soft_labels(teacher_dir):
    model = build_asr_model("conformer", kd_model_conf(teacher_dir, "cached"))
    with pytest.raises(ValueError, match=r"kd_token.*extract_soft_labels"):
        model(**batch())


def test_cached_topk_mismatch(teacher_dir):
    conf = kd_model_conf(teacher_dir, "cached", teacher={"model": teacher_dir, "mode": "cached", "topk": 8})
    model = build_asr_model("conformer", conf)
    with pytest.raises(ValueError, match="topk"):
        model(**cached_batch(teacher_dir))


# ------------------------------------------------------------------------------------------- the fused KD head
@pytest.mark.parametrize("conf", [{}, {"kd_share_decoder": True}, {"lsm_weight": 0.0, "kd_alpha": 1.0},
                                  {"length_normalized_loss": True}])
def test_fused_kd_head_equals_the_reference_path(teacher_dir, conf):
    """The model's loss, every stat and every parameter's gradient are the same with the fused KD head (the default)
    as through full (B, L, V) logits (`fused_kd_head = False`, the implementation before it), to float32 rounding.
    The texts have different lengths, so the decoders see padding."""
    model = build_asr_model("conformer", {**kd_model_conf(teacher_dir, "cached"), **conf})
    assert model.fused_kd_head
    b = cached_batch(teacher_dir, TEXTS[:4])
    results = []
    for fused in (False, True):
        model.fused_kd_head = fused
        model.zero_grad()
        torch.manual_seed(0)  # the same dropout masks on both paths
        loss, stats, _ = model(**copy.deepcopy(b))
        loss.backward()
        results.append((loss.detach(), stats, {n: p.grad.clone() for n, p in model.named_parameters()
                                               if p.grad is not None}))
    (ref_loss, ref_stats, ref_grads), (loss, stats, grads) = results
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert set(stats) == set(ref_stats)
    for key in stats:
        if stats[key] is not None:
            torch.testing.assert_close(torch.as_tensor(stats[key]).float(), torch.as_tensor(ref_stats[key]).float(),
                                       rtol=1e-5, atol=1e-6, msg=key)
    assert set(grads) == set(ref_grads) and any(n.startswith("kd_decoders.0.output_layer") for n in grads)
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_decoder_states_are_the_logits_inputs(teacher_dir):
    """Pins the ESPnet internal the fused head uses: a Transformer decoder with `output_layer = None` returns the
    states its output layer would map to the logits, and the layer is back in place afterwards."""
    from espnet_bertkd.asr.bertkd_model import decoder_states

    model = build_asr_model("conformer", kd_model_conf(teacher_dir, "cached")).eval()
    decoder = model.kd_decoders[0]
    memory, lens = torch.randn(2, 30, 16), torch.tensor([30, 21])
    ys_in, ys_lens = torch.randint(0, 50, (2, 6)), torch.tensor([6, 4])
    with torch.no_grad():
        logits, _ = decoder(memory, lens, ys_in, ys_lens)
        states = decoder_states(decoder, memory, lens, ys_in, ys_lens)
    assert isinstance(decoder.output_layer, torch.nn.Linear)
    assert states.shape == (2, 6, decoder.output_layer.in_features)
    torch.testing.assert_close(decoder.output_layer(states), logits)


def test_fused_kd_head_only_for_a_plain_linear_output_layer(teacher_dir):
    """An output layer that is not exactly `linear(x, W, b)` (a subclass such as a LoRA adapter, or a hooked layer)
    is run as it is, through the reference path: here a forward hook that doubles the logits changes the loss,
    which the fused head (reading only W and b) would have ignored."""
    from espnet_bertkd.asr.bertkd_model import plain_linear

    model = build_asr_model("conformer", kd_model_conf(teacher_dir, "cached")).eval()
    b = cached_batch(teacher_dir)
    with torch.no_grad():
        _, before, _ = model(**copy.deepcopy(b))
        for decoder in model.kd_decoders:
            decoder.output_layer.register_forward_hook(lambda _m, _i, out: out * 2)
            assert not plain_linear(decoder.output_layer)
        _, after, _ = model(**copy.deepcopy(b))
    assert not torch.allclose(before["loss_kd_layer1"], after["loss_kd_layer1"])


def test_recipe_kd_configs_plot_no_attention():
    """ESPnet plots every attention module each epoch (`num_att_plot`, default 3): with KD decoders that took 7-15 s
    per epoch against 1-2 s of training on the embedded recipe (issue 15, GPU). Every recipe config with KD layers
    turns it off."""
    root = Path(__file__).resolve().parents[1] / "egs"
    kd_configs = [p for p in sorted(root.glob("*/asr1/conf/train_asr_*.yaml"))
                  if (yaml.safe_load(p.read_text()).get("model_conf") or {}).get("kd_layers")]
    assert len(kd_configs) >= 6, kd_configs  # final_aed_kd and inter_aed_kd in each of the three recipes
    for path in kd_configs:
        assert yaml.safe_load(path.read_text()).get("num_att_plot") == 0, path
