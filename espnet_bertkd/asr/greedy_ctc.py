"""Batched greedy CTC decoding of any ESPnet ASR model (plugin, exported plain CTC, or CTC/attention).

ESPnet (202511, 202611) has no greedy CTC path: `asr_inference` with `ctc_weight=1.0, beam_size=1` runs a prefix beam
search (one utterance at a time, or in 202611 a padded batch of them). Here utterances are sorted by length and
batched; the encoder and the CTC argmax run once per batch; repeats are collapsed and blanks dropped on the whole
batch at once.

Padding must not change any output, so the places where ESPnet's batched computation depends on padding are made
exact: the batch is reflect-padded at each utterance's own ends and framed by one uncentred STFT (a centred STFT
reflects at the padded end of a batch; front-ends other than ESPnet's default run per utterance), the
subsampled padding mask is rebuilt from each utterance's own length, and every time-convolution in the encoder
(conformer and E-Branchformer convolution modules) sees zeros beyond each utterance's end, as it does alone
(ESPnet 202611 zeroes them itself; 202511 does not, see espnet_bertkd.compat).
The one case that stays padding-dependent is ESPnet's legacy relative position encoding (`rel_pos_type: legacy`),
whose relative shift depends on the padded length; a warning says so.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from espnet2.asr.espnet_model import ESPnetASRModel
from torch.nn.utils.rnn import pad_sequence

from espnet_bertkd.asr.speed import INFERENCE_ENCODER_MODULES, count_parameters


@dataclass
class GreedyResult:
    token_int: List[int]
    score: float  # log-probability of the greedy frame path
    interctc: Dict[int, List[int]]  # intermediate layer -> its greedy token ids


def collapse(
    logp: torch.Tensor, lengths: torch.Tensor, exclude: Sequence[int]
) -> Tuple[List[List[int]], torch.Tensor]:
    """Greedy CTC on a batch of log-posteriors (B, T, V): argmax per frame, merge repeats, drop blank/excluded ids.

    Returns the token ids per utterance and the path scores (sum of the per-frame maxima over valid frames).
    """
    best, ids = logp.max(dim=-1)
    valid = torch.arange(ids.size(1), device=ids.device)[None, :] < lengths[:, None]
    previous = torch.nn.functional.pad(ids[:, :-1], (1, 0), value=-1)
    keep = valid & (ids != previous) & ~torch.isin(ids, torch.tensor(list(exclude), device=ids.device))
    scores = best.float().masked_fill(~valid, 0.0).sum(-1)
    counts = keep.sum(-1).tolist()
    flat = ids[keep].tolist()
    out, start = [], 0
    for n in counts:
        out.append(flat[start : start + n])
        start += n
    return out, scores


# ---------------------------------------------------------------------- the ESPnet internals greedy decoding uses
# The greedy path reaches into ESPnet in exactly these functions: the private front-end step `_extract_feats` and
# `encode` called unbound, as ESPnetASRModel's and not the model's own (pinned by tests/test_greedy_ctc.py's
# test_espnet_encode_is_frontend_then_encoder_path), and DefaultFrontend's `stft` with Stft's `center` flag
# (`centred_stft`, `uncentred`; pinned by test_batched_front_end_equals_each_utterance_alone).


def frontend_features(
    model: ESPnetASRModel, speech: torch.Tensor, lengths: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The front-end alone (STFT + filterbank; the waveform itself when the model has none), as the first step of
    ESPnet's `encode`: its private `ESPnetASRModel._extract_feats`. On a padded batch its features depend on the
    padding (see `GreedyCTCDecoder.features`)."""
    return model._extract_feats(speech, lengths)


def centred_stft(model: ESPnetASRModel) -> Optional[torch.nn.Module]:
    """The front-end's `espnet2.layers.stft.Stft` when the batch can be framed here, per utterance, and the front-end
    then run uncentred: ESPnet's `DefaultFrontend` (attribute `stft`, with `center=True`, and its enhancement
    `frontend` absent or doing nothing: no WPE, no beamformer, as ESPnet builds it by default). None for any other
    front-end (S3PRL, fused, raw waveform ...)."""
    frontend = model.frontend
    stft = getattr(frontend, "stft", None)
    if stft is None or type(stft).__name__ != "Stft":
        return None
    enhancement = getattr(frontend, "frontend", None)
    if enhancement is not None and (getattr(enhancement, "wpe", 1) is not None
                                    or getattr(enhancement, "beamformer", 1) is not None):
        return None
    if not (getattr(stft, "center", False) and isinstance(getattr(stft, "n_fft", None), int)):
        return None
    return stft


@contextlib.contextmanager
def uncentred(stft: torch.nn.Module) -> Iterator[None]:
    """Make ESPnet's Stft skip its own centre padding (its `center` attribute; its frame count formula
    `(ilens - n_fft) // hop + 1` then applies to the already padded lengths)."""
    stft.center = False
    try:
        yield
    finally:
        stft.center = True


def encode_every_layer(
    model: ESPnetASRModel, feats: torch.Tensor, feat_lengths: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, Dict[int, torch.Tensor]]:
    """ESPnet's encoder path after the front-end (normalize, pre-encoder, encoder, post-encoder) on features from
    `frontend_features`: the final output, its lengths and every intermediate block output the encoder returned.

    The front-end is detached for the call (ESPnet's `encode` skips a None front-end), and `ESPnetASRModel.encode`
    runs unbound rather than `model.encode`: a `model: bertkd` model overrides `encode`
    (espnet_bertkd.asr.bertkd_model.ESPnetBertKDModel.encode) to give ESPnet's `asr_inference` only the user's
    interCTC layers, dropping the KD layers and the extra blocks `GreedyCTCDecoder` asks the encoder for
    (`--interctc_layers`); the override adds nothing else (no hooks), so the unbound call computes the same outputs
    for plugin, exported and plain ESPnet models alike, with every layer kept.
    """
    frontend = model.frontend
    model.frontend = None
    try:
        out, out_lengths = ESPnetASRModel.encode(model, feats, feat_lengths)
    finally:
        model.frontend = frontend
    layers: Dict[int, torch.Tensor] = {}
    if isinstance(out, tuple):
        out, intermediate = out
        layers = dict(intermediate)
    return out, out_lengths, layers


# ---------------------------------------------------------------------------------------------- padding

def reflect_padded(speech: torch.Tensor, lengths: torch.Tensor, pad: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each utterance reflect-padded by `pad` samples at both of its own ends (what a centred STFT does to it alone),
    for the whole batch at once, and the padded lengths.

    speech: (B, N) waveforms, padded after `lengths`; needs pad < each length, as torch's reflection does. Returns
    (B, N + 2 pad), where row i holds its utterance's reflect-padded samples in its first lengths[i] + 2 pad
    positions (after them, whatever followed the utterance: no frame of it reads there), and lengths + 2 pad. Only
    the 2 pad edge samples per utterance are gathered; the rest is one copy.
    """
    batch, samples = speech.shape
    padded = speech.new_zeros(batch, samples + 2 * pad)
    padded[:, pad : pad + samples] = speech
    padded[:, :pad] = speech[:, 1 : pad + 1].flip(1)  # x[pad], ..., x[1]
    step = torch.arange(1, pad + 1, device=speech.device)[None, :]
    end = (lengths - 1)[:, None]
    padded.scatter_(1, end + pad + step, speech.gather(1, end - step))  # after x[L-1]: x[L-2], ..., x[L-1-pad]
    return padded, lengths + 2 * pad


def subsampled_lengths(embed: torch.nn.Module, lengths: torch.Tensor) -> torch.Tensor:
    """Frames the subsampling convolutions give each utterance when it is alone (no padding after it).

    Follows the time axis (the first kernel dimension) through the embed module's convolutions in order.
    """
    out = lengths.clone()
    for module in embed.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d)):
            k, s, p, d = module.kernel_size[0], module.stride[0], module.padding[0], module.dilation[0]
            out = torch.div(out + 2 * p - d * (k - 1) - 1, s, rounding_mode="floor") + 1
    return out


@contextlib.contextmanager
def padding_exact_encoder(model: ESPnetASRModel) -> Iterator[None]:
    """Make a padded batch through the encoder compute what each utterance computes alone.

    1. ESPnet subsamples the padding mask by slicing it at the batch's padded length, which marks up to one extra
       frame per subsampling stage as valid for shorter utterances (frames computed from padding, then attended
       to). The subsampling module's output mask is replaced by one built from each utterance's own length.
    2. Convolutions along time after subsampling (conformer / E-Branchformer modules) read neighbouring frames;
       each Conv1d with a kernel wider than one frame gets its padded frames zeroed, as if the utterance ended there.
    """
    encoder = model.encoder
    embed = getattr(encoder, "embed", None)
    if embed is None:
        yield
        return
    state: Dict[str, torch.Tensor] = {}

    def capture_lengths(_module, args):
        state["own"] = subsampled_lengths(embed, args[1])  # encoder(xs_pad, ilens, ...): lengths it is given

    def fix_mask(_module, _inputs, output):
        if not (isinstance(output, tuple) and isinstance(output[-1], torch.Tensor) and output[-1].dtype == torch.bool):
            return None
        mask = output[-1]  # (B, 1, T')
        own = state["own"].to(mask.device)
        mask = (torch.arange(mask.size(-1), device=mask.device)[None, :] < own[:, None])[:, None, :]
        x = output[0][0] if isinstance(output[0], tuple) else output[0]  # (x, pos_emb) with relative positions
        state["keep"] = mask.to(x.dtype)
        return output[:-1] + (mask,)

    def zero_padding(_module, args):
        x, keep = args[0], state.get("keep")  # keep: (B, 1, T') of 1/0, made once per batch
        if keep is not None and x.dim() == 3 and x.size(-1) == keep.size(-1) and x.size(0) == keep.size(0):
            return (x * keep.to(x.dtype),) + tuple(args[1:])
        return None

    handles = [encoder.register_forward_pre_hook(capture_lengths), embed.register_forward_hook(fix_mask)]
    for name, module in encoder.named_modules():
        if not name.startswith("embed") and isinstance(module, torch.nn.Conv1d) and module.kernel_size[0] > 1:
            handles.append(module.register_forward_pre_hook(zero_padding))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class GreedyCTCDecoder:
    """Decode batches of waveforms (or features) with a model's CTC head, optionally at intermediate layers too."""

    def __init__(
        self, model: ESPnetASRModel, interctc_layers: Sequence[int] = (), batched_frontend: bool = True
    ) -> None:
        """`batched_frontend=False` keeps the plain reference path (the front-end on one utterance at a time), which
        the tests and benchmarks/decoding.py compare with the batched framing."""
        if model.ctc is None:
            raise ValueError("the model has no CTC head (ctc_weight was 0): greedy CTC decoding is impossible")
        self.model = model.eval()
        self.interctc_layers = sorted(interctc_layers)
        self.batched_frontend = batched_frontend
        self.exclude = sorted({model.blank_id, model.sos, model.eos})
        self._expose_layers()
        if any(type(m).__name__.startswith("LegacyRel") for m in model.modules()):
            logging.warning(
                "the encoder uses legacy relative positions (rel_pos_type: legacy), whose output depends on the "
                "padded batch length in ESPnet itself; batched hypotheses can differ from one-at-a-time decoding. "
                "Use --batch_size 1 for exact results, or train with rel_pos_type: latest."
            )

    @property
    def inference_params(self) -> int:
        """Parameters greedy decoding uses: front-end to CTC head (no attention or KD decoders)."""
        modules = [getattr(self.model, name, None) for name in INFERENCE_ENCODER_MODULES]
        return count_parameters(modules + [self.model.ctc])

    def _expose_layers(self) -> None:
        if not self.interctc_layers:
            return
        encoder = self.model.encoder
        if not hasattr(encoder, "interctc_layer_idx"):
            raise ValueError(f"{type(encoder).__name__} cannot return intermediate layers")
        present = set(encoder.interctc_layer_idx)
        missing = set(self.interctc_layers) - present
        num_blocks = len(encoder.encoders)
        if any(not 0 < l < num_blocks for l in self.interctc_layers):
            raise ValueError(f"--interctc_layers {self.interctc_layers}: intermediate blocks are 1..{num_blocks - 1}")
        if missing and getattr(encoder, "interctc_use_conditioning", False):
            raise ValueError(
                f"--interctc_layers {sorted(missing)}: this encoder conditions on CTC at its interCTC layers "
                f"{sorted(present)}; only those can be decoded"
            )
        encoder.interctc_layer_idx = sorted(present | missing)

    @torch.no_grad()
    def features(self, speech: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Front-end features of a padded batch, each exactly as its utterance alone gets them.

        A centred STFT reflects at the padded end of a batch, so the last frames of every shorter utterance would
        see padding. With ESPnet's default front-end the batch is instead reflect-padded here at each utterance's own
        ends and framed in one uncentred STFT: the same samples per frame as alone, one call for the batch. Any other
        front-end runs one utterance at a time.
        """
        model = self.model
        if model.frontend is None:
            return speech, lengths
        stft = centred_stft(model) if self.batched_frontend else None
        if stft is not None and speech.dim() == 2 and bool((lengths > stft.n_fft // 2).all()):
            padded, padded_lengths = reflect_padded(speech, lengths, stft.n_fft // 2)
            with uncentred(stft):
                return frontend_features(model, padded, padded_lengths)
        feats = [frontend_features(model, speech[i : i + 1, : lengths[i]], lengths[i : i + 1])[0][0]
                 for i in range(speech.size(0))]
        return pad_sequence(feats, batch_first=True), torch.tensor([f.size(0) for f in feats], device=speech.device)

    @torch.no_grad()
    def encode(
        self, speech: torch.Tensor, lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, Dict[int, torch.Tensor]]:
        """Padding-exact batched encoding: per-utterance-exact front-end, masked convolutions, one encoder pass."""
        feats, feat_lengths = self.features(speech, lengths)
        with padding_exact_encoder(self.model):
            return encode_every_layer(self.model, feats, feat_lengths)

    @torch.no_grad()
    def __call__(self, speech: torch.Tensor, lengths: torch.Tensor) -> List[GreedyResult]:
        encoder_out, out_lengths, layers = self.encode(speech, lengths)
        tokens, scores = collapse(self.model.ctc.log_softmax(encoder_out), out_lengths, self.exclude)
        inter = {l: collapse(self.model.ctc.log_softmax(layers[l]), out_lengths, self.exclude)[0]
                 for l in self.interctc_layers}
        return [
            GreedyResult(t, float(s), {l: inter[l][i] for l in self.interctc_layers})
            for i, (t, s) in enumerate(zip(tokens, scores.tolist()))
        ]


def length_sorted_batches(
    lengths: Dict[str, int], batch_size: int = 0, batch_samples: int = 0
) -> List[List[str]]:
    """Keys sorted by length (longest first) and cut into batches of `batch_size` utterances or, when
    `batch_size` is 0, of at most `batch_samples` padded samples (longest x count)."""
    if batch_size <= 0 and batch_samples <= 0:
        raise ValueError("set --batch_size (utterances) or --batch_seconds (audio per batch)")
    keys = sorted(lengths, key=lambda k: (-lengths[k], k))
    batches: List[List[str]] = []
    for key in keys:
        if batches:
            current = batches[-1]
            longest = lengths[current[0]]
            fits = len(current) < batch_size if batch_size > 0 else (len(current) + 1) * longest <= batch_samples
            if fits:
                current.append(key)
                continue
        batches.append([key])
    return batches
