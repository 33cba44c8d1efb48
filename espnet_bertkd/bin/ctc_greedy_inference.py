"""Batched greedy CTC decoding with ESPnet-like arguments and ESPnet's output layout.

    python -m espnet_bertkd.bin.ctc_greedy_inference --asr_train_config exp/asr/config.yaml \
        --asr_model_file exp/asr/valid.cer_ctc.ave.pth --data_path_and_name_and_type data/test/wav.scp,speech,sound \
        --output_dir exp/asr/decode_greedy/test [--batch_seconds 200 | --batch_size 32] [--interctc_layers 6,12]

Writes OUTPUT_DIR/1best_recog/{text,token,token_int,score} (and encoder_interctc_layer<N>.txt for --interctc_layers,
as ESPnet's asr_inference does) plus OUTPUT_DIR/speed.json with the real-time factor and utterances/s.
Works for `model: bertkd` checkpoints, exported plain CTC models and ESPnet CTC/attention models (CTC head).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import soundfile
import torch

import espnet_bertkd  # noqa: F401  (registers model: bertkd once ESPnet's ASR task is imported)
from espnet_bertkd.asr.greedy_ctc import GreedyCTCDecoder, length_sorted_batches
from espnet_bertkd.asr.checkpoint import build_model_checked
from espnet_bertkd.asr.speed import speed_record, write_speed


def read_key_file(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.split(maxsplit=1)[0] for line in f if line.strip()]


def sound_lengths(scp: str, keys: List[str], dataset) -> Dict[str, int]:
    """Samples per utterance, from file headers where the scp holds plain paths (no decoding of audio)."""
    paths: Dict[str, str] = {}
    with open(scp, encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split(maxsplit=1)
            if len(parts) == 2:
                paths[parts[0]] = parts[1]
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
    p.add_argument("--fs", type=int, default=16000, help="sample rate, to turn samples into seconds")
    p.add_argument("--ngpu", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--interctc_layers", default="", help="also decode these intermediate layers, e.g. 6,12")
    p.add_argument("--token_type", default=None, help="override the training config's token_type")
    p.add_argument("--bpemodel", default=None, help="override the training config's bpemodel")
    p.add_argument("--log_level", default="INFO")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    from espnet2.fileio.datadir_writer import DatadirWriter
    from espnet2.text.build_tokenizer import build_tokenizer
    from espnet2.train.dataset import ESPnetDataset

    args = get_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    device = "cuda" if args.ngpu > 0 else "cpu"
    model, train_args = build_model_checked(args.asr_train_config, args.asr_model_file, device)
    model.to(dtype=getattr(torch, args.dtype)).eval()
    layers = [int(x) for x in args.interctc_layers.split(",") if x.strip()]
    decoder = GreedyCTCDecoder(model, layers)
    token_type = args.token_type or train_args.token_type
    bpemodel = args.bpemodel or getattr(train_args, "bpemodel", None)
    tokenizer = build_tokenizer(token_type=token_type, bpemodel=bpemodel) if token_type else None
    token_list = model.token_list

    entries = [tuple(x.split(",")) for x in args.data_path_and_name_and_type]
    speech_entries = [e for e in entries if e[1] == "speech"]
    if len(speech_entries) != 1:
        raise ValueError("--data_path_and_name_and_type needs exactly one PATH,speech,TYPE entry")
    dataset = ESPnetDataset(speech_entries, float_dtype="float32")
    keys = list(dataset.loader_dict["speech"].keys())
    if args.key_file:
        wanted = set(read_key_file(args.key_file))
        keys = [k for k in keys if k in wanted]
    lengths = (sound_lengths(speech_entries[0][0], keys, dataset) if speech_entries[0][2] == "sound"
               else {k: int(dataset[k][1]["speech"].shape[0]) for k in keys})
    batches = length_sorted_batches(lengths, args.batch_size, int(args.batch_seconds * args.fs))

    results = {}
    compute = 0.0
    wall_start = time.perf_counter()
    for batch in batches:
        arrays = [torch.from_numpy(np.asarray(dataset[k][1]["speech"], dtype=np.float32)) for k in batch]
        speech = torch.nn.utils.rnn.pad_sequence(arrays, batch_first=True).to(device, getattr(torch, args.dtype))
        speech_lengths = torch.tensor([a.shape[0] for a in arrays], device=device)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = decoder(speech, speech_lengths)
        if device == "cuda":
            torch.cuda.synchronize()
        compute += time.perf_counter() - start
        results.update(zip(batch, out))
    wall = time.perf_counter() - wall_start

    out_dir = Path(args.output_dir)
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
    audio_seconds = sum(lengths[k] for k in keys) / args.fs if speech_entries[0][2] == "sound" else None
    speed = speed_record(len(keys), compute, audio_seconds, decoder="ctc_greedy_inference", batches=len(batches),
                         wall_seconds=wall, device=device, dtype=args.dtype, batch_size=args.batch_size,
                         batch_seconds=args.batch_seconds, inference_params=decoder.inference_params)
    write_speed(out_dir, speed)
    logging.info("greedy CTC: %d utterances in %.2f s compute (RTF %s, %.1f utt/s)", len(keys), compute,
                 f"{speed['rtf']:.4f}" if speed["rtf"] else "n/a", speed["utterances_per_second"] or 0.0)


if __name__ == "__main__":
    main(sys.argv[1:])
