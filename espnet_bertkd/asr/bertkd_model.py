"""ESPnet CTC model that learns from a masked-LM teacher through attention decoders at chosen encoder layers.

Loss (docs/method.md):  L = c * L_ctc' + (1 - c) * mean over decoders of L_dec,
  L_ctc' = (1 - b) * L_ctc + b * mean(interCTC losses)            (ESPnet's own CTC side, unchanged)
  L_kd_l = (1 - a) * CE_lsm(w, p_l) + a * sum_i KL(q_i || p_l,i)   (one KD decoder per layer l in kd_layers)
where c = ctc_weight, b = interctc_weight, a = kd_alpha, and "decoders" are the KD decoders plus ESPnet's ordinary
attention decoder if one is configured. With `kd_layers: []` this is exactly ESPnetASRModel's loss.

The KD decoders predict the teacher's vocabulary plus one extra id used as <sos/eos> (ESPnet's convention), so
they are independent of the CTC token list. They are invisible to ESPnet's inference (`encode()` hides their
layers, `decoder` is only ESPnet's own) and are stripped by `export_ctc`.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.torch_utils.device_funcs import force_gatherable
from torch.nn.utils import parametrize

from espnet_bertkd.compat import add_sos_eos, th_accuracy, without_decoder_none_warning
from espnet_bertkd.kd.config import EncoderShape, check_kd_conf
from espnet_bertkd.kd.loss import KDDecoderLoss, fused_head_loss
from espnet_bertkd.kd.online import OnlineSoftLabels
from espnet_bertkd.kd.soft_labels import KD_PROB, KD_TOKEN, KDTargets, batch_targets
from espnet_bertkd.kd.teacher import load_teacher_vocab_size
from espnet_bertkd.utils.fileio import first_few

MODEL_NAME = "bertkd"  # the `model:` value ESPnet configs use (registered by espnet_bertkd.tasks.asr)
_ESPNET_INIT = inspect.signature(ESPnetASRModel.__init__)


class ESPnetBertKDModel(ESPnetASRModel):
    """ESPnetASRModel + KD decoders. Registered in ESPnet as `model: bertkd`."""

    # State-dict prefixes of everything that exists only for training (dropped at export).
    TRAINING_ONLY_PREFIXES = ("kd_decoders.", "kd_projections.")
    # KD decoders' output layer + loss as one chunked pass (espnet_bertkd.kd.loss.fused_head_loss) when the decoder's
    # output layer is a plain Linear; False runs the reference path through (B, L, V) logits, which tests and
    # benchmarks/train_step.py compare it with.
    fused_kd_head: bool = True

    def __init__(
        self,
        *args: Any,
        kd_layers: Sequence[int] = (),
        kd_alpha: float = 0.5,
        kd_decoder: str = "transformer",
        kd_decoder_conf: Optional[Dict[str, Any]] = None,
        kd_share_decoder: bool = False,
        kd_decoder_dim: Optional[int] = None,
        teacher: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        conf = _ESPNET_INIT.bind(None, *args, **kwargs)
        conf.apply_defaults()
        espnet_conf = dict(conf.arguments)
        espnet_conf.pop("self")
        ctc_weight = espnet_conf["ctc_weight"]
        kd = check_kd_conf(  # the same checks as the training preflight (espnet_bertkd.kd.config)
            kd_layers=kd_layers, kd_alpha=kd_alpha, kd_decoder=kd_decoder, kd_decoder_conf=kd_decoder_conf,
            kd_share_decoder=kd_share_decoder, kd_decoder_dim=kd_decoder_dim, teacher=teacher, ctc_weight=ctc_weight,
            interctc_weight=espnet_conf["interctc_weight"], lsm_weight=espnet_conf["lsm_weight"],
            encoder=EncoderShape.of_module(espnet_conf["encoder"]),
        )
        kd_layers = kd.kd_layers
        if kd_layers and espnet_conf["decoder"] is None:
            # ESPnet insists on a decoder when ctc_weight < 1; ours are the KD decoders, built below.
            espnet_conf["ctc_weight"] = 1.0
            with without_decoder_none_warning():
                super().__init__(**espnet_conf)
        else:
            super().__init__(**espnet_conf)
        self.ctc_weight = ctc_weight

        if self.use_transducer_decoder or self.use_linear_decoder:
            raise ValueError("model: bertkd supports CTC and attention decoders, not transducer or linear decoders")
        self.teacher_config = kd.teacher
        self.interctc_layers = list(getattr(self.encoder, "interctc_layer_idx", []) or [])
        self.kd_layers = kd_layers
        self.kd_share_decoder = kd_share_decoder
        self._online: Optional[OnlineSoftLabels] = None
        if not self.kd_layers:
            return

        assert self.teacher_config is not None
        teacher_vocab = self.teacher_config.vocab_size or load_teacher_vocab_size(self.teacher_config.model)
        self.kd_vocab_size = teacher_vocab + 1
        self.kd_sos_eos = teacher_vocab
        self._build_kd_decoders(kd_decoder, dict(kd_decoder_conf or {}), kd_decoder_dim)
        self.kd_loss = KDDecoderLoss(
            self.kd_vocab_size, kd_alpha, espnet_conf["lsm_weight"], self.ignore_id,
            espnet_conf["length_normalized_loss"],
        )
        if self.teacher_config.mode == "online":
            self._online = OnlineSoftLabels(self.teacher_config, self.token_list, espnet_conf["sym_space"])

        # Intermediate outputs come from ESPnet's own interCTC mechanism: the encoder returns the listed blocks.
        intermediate = sorted(set(self.interctc_layers) | {l for l in self.kd_layers if l < self.num_blocks})
        if getattr(self.encoder, "interctc_use_conditioning", False) and set(intermediate) - set(self.interctc_layers):
            raise ValueError(
                "model_conf.kd_layers: with encoder_conf.interctc_use_conditioning the encoder conditions on CTC at "
                f"every returned layer; kd_layers {self.kd_layers} must be the final layer or among "
                f"interctc_layer_idx {self.interctc_layers}"
            )
        self.encoder.interctc_layer_idx = intermediate

    # ------------------------------------------------------------------ construction
    @property
    def num_blocks(self) -> int:
        blocks = getattr(self.encoder, "encoders", None)
        if blocks is None:
            raise ValueError(
                f"model_conf.kd_layers needs an encoder with blocks; {type(self.encoder).__name__} has none"
            )
        return len(blocks)

    def _layer_width(self, layer: int) -> int:
        if layer == self.num_blocks and self.postencoder is not None:
            return self.postencoder.output_size()
        return self.encoder.output_size()

    def _build_kd_decoders(self, name: str, conf: Dict[str, Any], dim: Optional[int]) -> None:
        from espnet2.tasks.asr import decoder_choices

        decoder_class = decoder_choices.get_class(name)
        widths = [self._layer_width(l) for l in self.kd_layers]
        dim = dim or widths[-1]
        # A projection per layer whose width differs from the decoder's; an identity otherwise.
        self.kd_projections = torch.nn.ModuleList(
            torch.nn.Identity() if w == dim else torch.nn.Linear(w, dim) for w in widths
        )
        count = 1 if self.kd_share_decoder else len(self.kd_layers)
        try:
            self.kd_decoders = torch.nn.ModuleList(
                decoder_class(vocab_size=self.kd_vocab_size, encoder_output_size=dim, **conf) for _ in range(count)
            )
        except TypeError as e:
            raise ValueError(f"model_conf.kd_decoder_conf does not fit kd_decoder={name!r}: {e}") from e

    # ------------------------------------------------------------------ encoder
    def encode_layers(
        self, speech: torch.Tensor, speech_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, Dict[int, torch.Tensor]]:
        """Final encoder output, its lengths, and every intermediate block output the encoder returned."""
        encoder_out, encoder_out_lens = super().encode(speech, speech_lengths)
        layers: Dict[int, torch.Tensor] = {}
        if isinstance(encoder_out, tuple):
            encoder_out, intermediate = encoder_out
            layers = dict(intermediate)
        return encoder_out, encoder_out_lens, layers

    def encode(self, speech: torch.Tensor, speech_lengths: torch.Tensor) -> Tuple[Any, torch.Tensor]:
        """ESPnet's view (used by asr_inference): intermediate outputs only for the user's interCTC layers."""
        encoder_out, encoder_out_lens, layers = self.encode_layers(speech, speech_lengths)
        if self.interctc_layers:
            return (encoder_out, [(l, layers[l]) for l in self.interctc_layers]), encoder_out_lens
        return encoder_out, encoder_out_lens

    # ------------------------------------------------------------------ training
    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        **kwargs: Any,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        assert text_lengths.dim() == 1, text_lengths.shape
        assert speech.shape[0] == speech_lengths.shape[0] == text.shape[0] == text_lengths.shape[0], (
            speech.shape, speech_lengths.shape, text.shape, text_lengths.shape,
        )
        batch_size = speech.shape[0]
        text[text == -1] = self.ignore_id
        text = text[:, : text_lengths.max()]

        encoder_out, encoder_out_lens, layers = self.encode_layers(speech, speech_lengths)
        stats: Dict[str, Any] = {}
        loss_ctc = self._ctc_side_loss(encoder_out, encoder_out_lens, layers, text, text_lengths, stats, kwargs)

        decoder_losses: List[torch.Tensor] = []
        loss_att, acc_att, cer_att, wer_att = None, None, None, None
        if self.decoder is not None:
            loss_att, acc_att, cer_att, wer_att = self._calc_att_loss(encoder_out, encoder_out_lens, text, text_lengths)
            decoder_losses.append(loss_att)
        stats["loss_att"] = loss_att.detach() if loss_att is not None else None
        stats["acc"] = acc_att
        stats["cer"] = cer_att
        stats["wer"] = wer_att

        if self.kd_layers:
            targets = self._kd_targets(text, text_lengths, kwargs)
            hiddens = {**layers, self.num_blocks: encoder_out}
            kd_losses = self._kd_losses(hiddens, encoder_out_lens, targets, stats)
            decoder_losses.extend(kd_losses)
            stats["loss_kd"] = torch.stack(kd_losses).mean().detach()

        if loss_ctc is None:
            loss = torch.stack(decoder_losses).mean()
        elif not decoder_losses:
            loss = loss_ctc
        else:
            loss = self.ctc_weight * loss_ctc + (1 - self.ctc_weight) * torch.stack(decoder_losses).mean()
        stats["loss"] = loss.detach()
        if self.kd_layers:
            loss = self._skip_nonfinite_kd(loss, stats, kwargs.get("utt_id"), batch_size)
        return force_gatherable((loss, stats, batch_size), loss.device)

    def _skip_nonfinite_kd(
        self, loss: torch.Tensor, stats: Dict[str, Any], utt_ids: Optional[Sequence[str]], batch_size: int
    ) -> torch.Tensor:
        """Report a batch whose KD loss is NaN/inf and make ESPnet skip its update, as it does for NaN gradients.

        ESPnet (202511 and 202611, espnet2/train/trainer.py) registers a batch's stats before backward, skips
        `optimizer.step()` with the warning "The grad norm is nan. Skipping updating the model." when the clipped
        gradient norm is not finite, and its reporter leaves non-finite stat values out of the epoch averages. A
        non-finite KD loss alone does not guarantee that: an infinite KL (a student probability that underflowed to
        0 on a teacher top-k id) has a finite gradient, so the update would go ahead on a loss nobody sees. So the
        loss is multiplied by NaN: every gradient becomes NaN and ESPnet skips the step (with accum_grad > 1 the
        whole accumulation window, as for any NaN gradient; AMP's GradScaler lowers its scale; under DDP the
        all-reduce makes every worker skip). Zeroing the KD term instead would train that batch on an objective
        the logs do not show. The stats keep their keys (DDP all-reduces them by key) with the non-finite values,
        which the reporter drops; `kd_skipped` (1 for such a batch, else 0; averaged over utterances) shows per
        epoch how much data this cost, and a warning names the utterances.
        """
        names = ["loss_kd"] + [f"loss_kd_layer{layer}" for layer in self.kd_layers]
        finite = bool(torch.isfinite(torch.stack([stats[n].reshape(()) for n in names])).all())
        stats["kd_skipped"] = torch.tensor(0.0 if finite else 1.0, device=loss.device)
        if finite:
            return loss
        bad = ", ".join(f"{n}={float(stats[n]):g}" for n in names if not torch.isfinite(stats[n]).all())
        logging.warning(
            "non-finite KD loss (%s) in %s: %s", bad, _describe_batch(utt_ids, batch_size),
            "the update is skipped (loss made NaN, so ESPnet sees a NaN grad norm) and the non-finite stats are left "
            "out of the epoch averages (kd_skipped counts such batches)" if self.training else
            "left out of the validation averages (kd_skipped counts such batches)",
        )
        stats["loss"] = torch.full_like(stats["loss"], float("nan"))
        return loss * float("nan")

    def _ctc_side_loss(
        self,
        encoder_out: torch.Tensor,
        encoder_out_lens: torch.Tensor,
        layers: Dict[int, torch.Tensor],
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        stats: Dict[str, Any],
        kwargs: Dict[str, Any],
    ) -> Optional[torch.Tensor]:
        """L_ctc' = (1 - b) L_ctc + b mean(interCTC), as ESPnetASRModel.forward computes it (aux CTC included)."""
        if self.ctc_weight == 0.0:
            return None
        loss_ctc, cer_ctc = self._calc_ctc_loss(encoder_out, encoder_out_lens, text, text_lengths)
        stats["loss_ctc"] = loss_ctc.detach()
        stats["cer_ctc"] = cer_ctc
        if self.interctc_weight == 0.0 or not self.interctc_layers:
            return loss_ctc
        loss_interctc = 0.0
        for layer in self.interctc_layers:
            ys, ys_lens = text, text_lengths
            aux_key = (self.aux_ctc or {}).get(str(layer))
            if aux_key is not None:
                if kwargs.get(aux_key) is None or kwargs.get(aux_key + "_lengths") is None:
                    raise ValueError(f"aux_ctc names {aux_key!r} for layer {layer} but the batch has no such input")
                ys, ys_lens = kwargs[aux_key], kwargs[aux_key + "_lengths"]
            loss_ic, cer_ic = self._calc_ctc_loss(layers[layer], encoder_out_lens, ys, ys_lens)
            loss_interctc = loss_interctc + loss_ic
            stats[f"loss_interctc_layer{layer}"] = loss_ic.detach()
            stats[f"cer_interctc_layer{layer}"] = cer_ic
        loss_interctc = loss_interctc / len(self.interctc_layers)
        return (1 - self.interctc_weight) * loss_ctc + self.interctc_weight * loss_interctc

    def _kd_targets(self, text: torch.Tensor, text_lengths: torch.Tensor, kwargs: Dict[str, Any]) -> KDTargets:
        utt_ids = kwargs.get("utt_id")
        if self._online is not None:
            kwargs = {**kwargs, **self._online(text, text_lengths, text.device)}
        elif kwargs.get(KD_TOKEN) is None or kwargs.get(KD_PROB) is None:
            raise ValueError(
                "model_conf.teacher.mode is 'cached' but the batch has no soft labels: pass "
                f"--train_data_path_and_name_and_type DIR/{KD_TOKEN}.scp,{KD_TOKEN},kaldi_ark and "
                f"DIR/{KD_PROB}.scp,{KD_PROB},kaldi_ark (and the valid_ equivalents), written by "
                "`python -m espnet_bertkd.bin.extract_soft_labels`; or use teacher.mode: online"
            )
        return batch_targets(
            kwargs[KD_TOKEN], kwargs[f"{KD_TOKEN}_lengths"], kwargs[KD_PROB], utt_ids,
            vocab_size=self.kd_sos_eos, topk=self.teacher_config.topk,
        )

    def _kd_losses(
        self,
        hiddens: Dict[int, torch.Tensor],
        encoder_out_lens: torch.Tensor,
        targets: KDTargets,
        stats: Dict[str, Any],
    ) -> List[torch.Tensor]:
        tokens = targets.tokens.masked_fill(targets.tokens < 0, self.ignore_id)
        ys_in, ys_out = add_sos_eos(tokens, self.kd_sos_eos, self.kd_sos_eos, self.ignore_id)
        ys_in_lens = targets.lengths + 1
        # The teacher has no distribution for <eos>: the target there is <eos> itself (q = one-hot).
        batch, length, k = targets.topk_ids.shape
        ids = torch.zeros(batch, length + 1, k, dtype=torch.long, device=tokens.device)
        probs = torch.zeros(batch, length + 1, k, device=tokens.device)
        ids[:, :length], probs[:, :length] = targets.topk_ids, targets.topk_probs
        rows = torch.arange(batch, device=tokens.device)
        ids[rows, targets.lengths, 0] = self.kd_sos_eos
        probs[rows, targets.lengths] = 0.0
        probs[rows, targets.lengths, 0] = 1.0
        ids, probs = ids[:, : ys_out.size(1)], probs[:, : ys_out.size(1)]

        losses = []
        for j, layer in enumerate(self.kd_layers):
            decoder = self.kd_decoders[0 if self.kd_share_decoder else j]
            memory = self.kd_projections[j](hiddens[layer])
            output_layer = getattr(decoder, "output_layer", None)
            if self.fused_kd_head and plain_linear(output_layer):
                states = decoder_states(decoder, memory, encoder_out_lens, ys_in, ys_in_lens)
                loss, _, _, acc = fused_head_loss(self.kd_loss, states, output_layer, ys_out, ids, probs)
            else:  # the reference path: full (B, L, V) logits
                logits, _ = decoder(memory, encoder_out_lens, ys_in, ys_in_lens)
                loss, _, _ = self.kd_loss(logits, ys_out, ids, probs)
                acc = th_accuracy(logits.view(-1, self.kd_vocab_size), ys_out, ignore_label=self.ignore_id)
            losses.append(loss)
            stats[f"loss_kd_layer{layer}"] = loss.detach()
            stats[f"acc_kd_layer{layer}"] = acc
        return losses


def plain_linear(module: Optional[torch.nn.Module]) -> bool:
    """Whether `module` computes exactly `linear(x, weight, bias)`, all the fused head reads: a torch Linear, not a
    subclass (e.g. a LoRA adapter from ESPnet's `create_adapter_fn`) and without hooks that change it."""
    return (type(module) is torch.nn.Linear and not module._forward_hooks and not module._forward_pre_hooks
            and not parametrize.is_parametrized(module))


def decoder_states(
    decoder: torch.nn.Module, memory: torch.Tensor, memory_lens: torch.Tensor, ys_in: torch.Tensor,
    ys_in_lens: torch.Tensor,
) -> torch.Tensor:
    """A Transformer-family ESPnet decoder's states before its output layer, (B, L, D).

    ESPnet's `BaseTransformerDecoder.forward` applies `output_layer` last and skips it when it is None (`return_hs`
    would still compute the logits), so the layer is detached for the call (so one decoder must not run in two
    threads at once, as in any training step). The one ESPnet internal of the fused KD head, pinned by
    tests/test_model.py::test_decoder_states_are_the_logits_inputs.
    """
    output_layer = decoder.output_layer
    decoder.output_layer = None
    try:
        states, _ = decoder(memory, memory_lens, ys_in, ys_in_lens)
    finally:
        decoder.output_layer = output_layer
    return states


def _describe_batch(utt_ids: Optional[Sequence[str]], batch_size: int, show: int = 5) -> str:
    """The batch's first utterance ids and how many there are (ESPnet passes them as `utt_id`)."""
    if not utt_ids:
        return f"a batch of {batch_size} utterances (no utt_id given)"
    return f"the batch of utterances {first_few(utt_ids, show, str)}"


def _merged_signature() -> inspect.Signature:
    """ESPnet's keyword arguments plus ours, so `--print_config` and config validation see every key."""
    espnet = [p for p in _ESPNET_INIT.parameters.values()]
    ours = [
        p for p in inspect.signature(ESPnetBertKDModel.__init__).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    ours = [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in ours]
    return _ESPNET_INIT.replace(parameters=espnet + ours)


ESPnetBertKDModel.__init__.__signature__ = _merged_signature()  # type: ignore[attr-defined]
