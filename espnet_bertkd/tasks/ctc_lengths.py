"""Utterances whose transcript is longer than the CTC output allows, found before training.

CTC needs at least one encoder frame per token plus one blank between repeated tokens; with fewer, the utterance's
loss is infinite, ESPnet's `zero_infinity` makes it 0 and the utterance teaches nothing (a corpus of short, fast
utterances trains to `loss_ctc=0`, grad norm 0, exit 0). The encoder's frame count follows from the sample count
(the shape files of collect-stats), the front-end's hop and the encoder's input layer; this module holds that
arithmetic (pinned against ESPnet's own modules by tests/test_ctc_lengths.py) and the count.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

# (kernel, stride) of each convolution of ESPnet's input layers (espnet2 encoders' `input_layer`); no entry: the
# layer keeps the frame count (linear, embed, None)
INPUT_LAYERS: Dict[Optional[str], Sequence[Tuple[int, int]]] = {
    "conv2d": ((3, 2), (3, 2)),
    "conv2d1": ((3, 1), (3, 1)),
    "conv2d2": ((3, 2), (3, 1)),
    "conv2d6": ((3, 2), (5, 3)),
    "conv2d8": ((3, 2), (3, 2), (3, 2)),
    "conv1d1": ((3, 1), (3, 1)),
    "conv1d2": ((3, 1), (3, 2)),
    "conv1d3": ((3, 1), (5, 3)),
    "linear": (),
    "embed": (),
    None: (),
}
MAX_INFEASIBLE_SHARE = 0.01  # of the training utterances: above it training is refused


def frontend_frames(samples: int, hop_length: int) -> int:
    """Frames of ESPnet's default front-end (a centred STFT)."""
    return samples // hop_length + 1


def encoder_frames(frames: int, input_layer: Optional[str]) -> int:
    """Frames after the encoder's input layer (0 where it is too short for the convolutions)."""
    for kernel, stride in INPUT_LAYERS[input_layer]:
        frames = (frames - kernel) // stride + 1 if frames >= kernel else 0
    return frames


def ctc_frames_needed(tokens: Sequence[str]) -> int:
    """The fewest CTC output frames for a label sequence: one per token and a blank between equal neighbours."""
    return len(tokens) + sum(a == b for a, b in zip(tokens, tokens[1:]))


def infeasible(samples: Dict[str, int], tokens: Iterable[Tuple[str, Sequence[str]]], hop_length: int,
               input_layer: Optional[str]) -> Tuple[List[Tuple[str, int, int]], int]:
    """(utterance, encoder frames, frames needed) of every utterance CTC cannot align, and how many were checked
    (those in both `samples` and `tokens`)."""
    bad: List[Tuple[str, int, int]] = []
    checked = 0
    for utt, toks in tokens:
        if utt not in samples:
            continue
        checked += 1
        have = encoder_frames(frontend_frames(samples[utt], hop_length), input_layer)
        need = ctc_frames_needed(toks)
        if have < need or have == 0:  # 0 frames: ESPnet's input layer raises TooShortUttError
            bad.append((utt, have, need))
    return bad, checked
