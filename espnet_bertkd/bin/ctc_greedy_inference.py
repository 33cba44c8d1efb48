"""Batched greedy CTC decoding with ESPnet-like arguments and ESPnet's output layout.

    python -m espnet_bertkd.bin.ctc_greedy_inference --asr_train_config exp/asr/config.yaml \
        --asr_model_file exp/asr/valid.cer_ctc.ave.pth --data_path_and_name_and_type data/test/wav.scp,speech,sound \
        --output_dir exp/asr/decode_greedy/test [--batch_seconds 200 | --batch_size 32] [--interctc_layers 6,12]

Writes OUTPUT_DIR/1best_recog/{text,token,token_int,score} (and encoder_interctc_layer<N>.txt for --interctc_layers,
as ESPnet's asr_inference does) plus OUTPUT_DIR/speed.json with the real-time factor and utterances/s.
Works for `model: bertkd` checkpoints, exported plain CTC models and ESPnet CTC/attention models (CTC head).

Before the model is loaded: OUTPUT_DIR must be writable, and audio inputs must be at the model's sample rate
(`frontend_conf.fs`); integer PCM from a `kaldi_ark` wav-in-ark is scaled to [-1, 1), as ESPnet's `sound` loader
gives it (espnet_bertkd.asr.decode_inputs).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import soundfile
import torch

import espnet_bertkd  # noqa: F401  (registers model: bertkd once ESPnet's ASR task is imported)
from espnet_bertkd.asr.greedy_ctc import GreedyCTCDecoder, GreedyResult, length_sorted_batches
from espnet_bertkd.asr.checkpoint import build_model_checked
from espnet_bertkd.asr.decode_inputs import ScaledSpeech, check_audio, check_output_dir, model_sample_rate
from espnet_bertkd.asr.speed import speed_record, start_decoding, write_speed
from espnet_bertkd.tasks.audio import AudioReadError, check_speech_input
from espnet_bertkd.utils.fileio import first_few, read_dict, read_keys


def sound_lengths(scp: str, keys: List[str], dataset) -> Dict[str, int]:
    """Samples per utterance, from file headers where the scp holds plain paths (no decoding of audio)."""
    paths = read_dict(scp)
    lengths = {}
    for key in keys:
        path = paths.get(key, "")
        if path and not path.endswith("|") and os.path.exists(path):
            lengths[key] = soundfile.info(path).frames
        else:
            lengths[key] = int(dataset[key][1]["speech"].shape[0])
    return lengths


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_train_config", required=True)
    p.add_argument("--asr_model_file", required=True)
    p.add_argument("--data_path_and_name_and_type", action="append", required=True,
                   help="PATH,speech,TYPE (ESPnet's types: sound, kaldi_ark, ...)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--key_file", default=None, help="decode only these utterances (job splitting)")
    p.add_argument("--batch_size", type=int, default=0, help="utterances per batch (0: use --batch_seconds)")
    p.add_argument("--batch_seconds", type=float, default=200.0, help="padded audio seconds per batch")
    p.add_argument("--fs", type=int, default=None,
                   help="sample rate, to turn samples into seconds (default: the model's frontend_conf.fs, or 16000)")
    p.add_argument("--ngpu", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--interctc_layers", default="", help="also decode these intermediate layers, e.g. 6,12")
    p.add_argument("--token_type", default=None, help="override the training config's token_type")
    p.add_argument("--bpemodel", default=None, help="override the training config's bpemodel")
    p.add_argument("--log_level", default="INFO")
    return p


@dataclass
class Speech:
    """The utterances to decode: ESPnet's dataset over the one speech input, the keys in input order and their
    lengths in samples (or frames, for feature inputs)."""

    dataset: Any
    keys: List[str]
    lengths: Dict[str, int]
    is_sound: bool


def load_decoder(args: argparse.Namespace, device: str) -> Tuple[GreedyCTCDecoder, Any]:
    """The model (checked against its config) in the requested dtype, its greedy decoder and the tokenizer that turns
    tokens back into text (None: tokens joined by spaces)."""
    from espnet2.text.build_tokenizer import build_tokenizer

    model, train_args = build_model_checked(args.asr_train_config, args.asr_model_file, device)
    model.to(dtype=getattr(torch, args.dtype)).eval()
    layers = [int(x) for x in args.interctc_layers.split(",") if x.strip()]
    decoder = GreedyCTCDecoder(model, layers)
    token_type = args.token_type or train_args.token_type
    bpemodel = args.bpemodel or getattr(train_args, "bpemodel", None)
    tokenizer = build_tokenizer(token_type=token_type, bpemodel=bpemodel) if token_type else None
    return decoder, tokenizer


def load_speech(data_path_and_name_and_type: List[str], key_file: Optional[str]) -> Speech:
    """The one PATH,speech,TYPE input, restricted to the utterances of `key_file` when given."""
    from espnet2.train.dataset import ESPnetDataset

    entries = [tuple(x.split(",")) for x in data_path_and_name_and_type]
    speech_entries = [e for e in entries if e[1] == "speech"]
    if len(speech_entries) != 1:
        raise ValueError("--data_path_and_name_and_type needs exactly one PATH,speech,TYPE entry")
    path, _, kind = speech_entries[0]
    dataset = ESPnetDataset(speech_entries, float_dtype="float32")
    keys = list(dataset.loader_dict["speech"].keys())
    if key_file:
        wanted = set(read_keys(key_file))
        keys = [k for k in keys if k in wanted]
    is_sound = kind == "sound"
    lengths = (sound_lengths(path, keys, dataset) if is_sound
               else {k: int(dataset[k][1]["speech"].shape[0]) for k in keys})
    return Speech(dataset, keys, lengths, is_sound)


MIN_PROBE_SAMPLES = 16000  # utterances shorter than this trigger the probe for the shortest decodable length


def shortest_decodable(decoder: Any, device: str, dtype: str, limit: int = MIN_PROBE_SAMPLES) -> int:
    """The fewest samples the model decodes (its STFT's reflect padding and its input layer's convolutions need
    some: a 0.01 s utterance made the whole batch fail), found by bisection on silence."""
    from espnet_bertkd.compat import TooShortUttError

    def works(n: int) -> bool:
        speech = torch.zeros(1, n, device=device, dtype=getattr(torch, dtype))
        try:
            decoder(speech, torch.tensor([n], device=device))
        except (RuntimeError, ValueError, IndexError, TooShortUttError):
            return False
        return True

    if not works(limit):
        return limit
    low, high = 0, limit  # works(high); not works(low) for low = 0
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if works(middle) else (middle, high)
    return high


def decode_batches(
    decoder: GreedyCTCDecoder, dataset: Any, batches: List[List[str]], device: str, dtype: str,
    samples: Optional[Dict[str, int]] = None,
) -> Tuple[Dict[str, GreedyResult], float, float]:
    """Decode each batch (padded on `device` in `dtype`): the results by key, the seconds spent inside the decoder
    (synchronised on a GPU; loading and padding excluded) and the wall-clock seconds of the whole loop. With the
    utterances' `samples` (raw audio), those too short for the model get an empty hypothesis and are named in a
    warning, instead of failing the batch and with it the job."""
    results: Dict[str, GreedyResult] = {}
    compute = 0.0
    wall_start = time.perf_counter()
    lengths = samples or {}
    if lengths and min(lengths.values()) < MIN_PROBE_SAMPLES:  # cheap: most sets have nothing that short
        shortest = shortest_decodable(decoder, device, dtype)
        short = sorted(k for k, n in lengths.items() if n < shortest)
        if short:
            logging.warning("%d utterances are shorter than the %d samples the model's front-end and input layer "
                            "need; each gets an empty hypothesis: %s", len(short), shortest, first_few(short))
            empty = GreedyResult([], 0.0, {layer: [] for layer in getattr(decoder, "interctc_layers", ())})
            results.update((k, empty) for k in short)
            batches = [[k for k in batch if k not in results] for batch in batches]
            batches = [batch for batch in batches if batch]
    for batch in batches:
        arrays = [torch.from_numpy(np.asarray(dataset[k][1]["speech"], dtype=np.float32)) for k in batch]
        speech = torch.nn.utils.rnn.pad_sequence(arrays, batch_first=True).to(device, getattr(torch, dtype))
        speech_lengths = torch.tensor([a.shape[0] for a in arrays], device=device)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = decoder(speech, speech_lengths)
        if device == "cuda":
            torch.cuda.synchronize()
        compute += time.perf_counter() - start
        results.update(zip(batch, out))
    return results, compute, time.perf_counter() - wall_start


def write_1best(
    out_dir: Path, keys: List[str], results: Dict[str, GreedyResult], token_list: List[str], tokenizer: Any
) -> None:
    """ESPnet's asr_inference layout: OUTPUT_DIR/1best_recog/{token,token_int,score,text}, and
    encoder_interctc_layer<N>.txt per decoded intermediate layer, one line per key in `keys` order."""
    from espnet2.fileio.datadir_writer import DatadirWriter

    with DatadirWriter(out_dir) as writer:
        best = writer["1best_recog"]
        for key in keys:
            r = results[key]
            tokens = [token_list[i] for i in r.token_int]
            best["token"][key] = " ".join(tokens)
            best["token_int"][key] = " ".join(map(str, r.token_int))
            best["score"][key] = str(r.score)
            best["text"][key] = tokenizer.tokens2text(tokens) if tokenizer is not None else " ".join(tokens)
            for layer, ids in r.interctc.items():
                best[f"encoder_interctc_layer{layer}.txt"][key] = " ".join(token_list[i] for i in ids)


def main(argv: Optional[List[str]] = None) -> None:
    run(get_parser().parse_args(argv))


def run(args: argparse.Namespace, prog: str = "ctc_greedy_inference",
        make_decoder: Optional[Callable[[GreedyCTCDecoder, Any], Any]] = None) -> None:
    """Check the inputs, load the model, decode in length-sorted batches, write 1best_recog/ and speed.json.
    `make_decoder(greedy_decoder, tokenizer)` replaces the search (e.g. ctc_lm_inference's lexicon beam search): it
    returns a callable like GreedyCTCDecoder's (GreedyResult per utterance) with `model` and `inference_params`, and
    optionally `search_params` (recorded in speed.json as "search"); a ValueError it raises is reported as bad input."""
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    device = "cuda" if args.ngpu > 0 else "cpu"
    try:
        check_output_dir(args.output_dir)
        model_rate = model_sample_rate(args.asr_train_config)
        check_speech_input(args.data_path_and_name_and_type, args.key_file, args.asr_train_config)  # DataError
        speech = load_speech(args.data_path_and_name_and_type, args.key_file)
        path, _, kind = next(e for e in (x.split(",") for x in args.data_path_and_name_and_type) if e[1] == "speech")
        scales = check_audio(path, kind, speech.keys, speech.dataset, model_rate, args.asr_train_config)
        decoder, tokenizer = load_decoder(args, device)
        if make_decoder is not None:
            decoder = make_decoder(decoder, tokenizer)
    except ValueError as e:
        sys.exit(f"{prog}: {e}")
    start_decoding(args.output_dir)  # unfinished (no speed.json) until the end
    fs = args.fs or model_rate or 16000
    dataset = ScaledSpeech(speech.dataset, scales) if scales else speech.dataset
    batches = length_sorted_batches(speech.lengths, args.batch_size, int(args.batch_seconds * fs))
    try:
        results, compute, wall = decode_batches(decoder, dataset, batches, device, args.dtype,
                                                speech.lengths if speech.is_sound else None)
    except AudioReadError as e:  # a truncated or corrupt file: the message names the utterance and the file
        sys.exit(f"{prog}: {e}; nothing was written")

    out_dir = Path(args.output_dir)
    keys = speech.keys
    write_1best(out_dir, keys, results, decoder.model.token_list, tokenizer)
    audio_seconds = sum(speech.lengths[k] for k in keys) / fs if speech.is_sound else None
    speed = speed_record(len(keys), compute, audio_seconds, decoder=prog, batches=len(batches),
                         wall_seconds=wall, device=device, dtype=args.dtype, batch_size=args.batch_size,
                         batch_seconds=args.batch_seconds, inference_params=decoder.inference_params,
                         **({"search": decoder.search_params} if hasattr(decoder, "search_params") else {}))
    write_speed(out_dir, speed)
    logging.info("%s: %d utterances in %.2f s compute (RTF %s, %.1f utt/s)", prog, len(keys), compute,
                 f"{speed['rtf']:.4f}" if speed["rtf"] else "n/a", speed["utterances_per_second"] or 0.0)


if __name__ == "__main__":
    main(sys.argv[1:])
