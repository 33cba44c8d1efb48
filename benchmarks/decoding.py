"""Decoding speed: batched greedy CTC vs ESPnet's asr_inference (CTC beam 1, and beam search with LM shallow fusion).

    python benchmarks/decoding.py [--asr_train_config C --asr_model_file M --lm_train_config LC --lm_file LM
                                   --wav_scp data/test/wav.scp] [--utterances 24] [--slow_utterances 6]
                                  [--beam_batch_size 16]

Each ESPnet search runs one utterance at a time and, where the installed ESPnet has it (202611's
`Speech2Text.batch_decode`), also as one batched beam search over --beam_batch_size utterances, so greedy is
compared with the fastest search ESPnet offers; the batched rows also say how many hypotheses equal the
one-at-a-time search's.

Without a trained model it builds random-weight ones through ESPnet's parsers (a 12-block x 256 conformer CTC model
and a 4-layer Transformer LM over a 500-token vocabulary) and random 3-12 s waveforms: speed does not need accuracy,
but a random model's hypothesis lengths differ from a trained one's, which matters for beam search; prefer a trained
model when there is one. All decoders see the same utterances in one process; times are medians of --repeats runs
(the slow decoders run once over --slow_utterances utterances and are compared per second of audio).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import soundfile
import torch
import yaml

import espnet_bertkd  # noqa: F401
from espnet_bertkd.asr.greedy_ctc import GreedyCTCDecoder, length_sorted_batches

RATE = 16000


def random_models(out: Path, vocab: int) -> Tuple[str, str, str, str]:
    from espnet2.tasks.asr import ASRTask
    from espnet2.tasks.lm import LMTask

    tokens = ["<blank>", "<unk>"] + [f"w{i}" for i in range(vocab - 3)] + ["<sos/eos>"]
    enc = {"output_size": 256, "attention_heads": 4, "linear_units": 1024, "num_blocks": 12, "input_layer": "conv2d",
           "rel_pos_type": "latest", "pos_enc_layer_type": "rel_pos", "selfattention_layer_type": "rel_selfattn",
           "macaron_style": True, "use_cnn_module": True, "cnn_module_kernel": 31, "normalize_before": True}
    argv = ["--token_list", "x", "--token_type", "word", "--encoder", "conformer", "--model", "espnet",
            "--model_conf", "ctc_weight=1.0", "--frontend_conf", "n_fft=512", "--frontend_conf", "hop_length=160",
            "--frontend_conf", "n_mels=80", "--normalize", "utterance_mvn"]
    args = ASRTask.get_parser().parse_args(argv)
    args.token_list, args.encoder_conf = tokens, enc
    torch.manual_seed(0)
    model = ASRTask.build_model(args)
    (out / "asr.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), out / "asr.pth")

    lm_argv = ["--token_list", "x", "--token_type", "word", "--lm", "transformer", "--lm_conf", "layer=4",
               "--lm_conf", "unit=1024", "--lm_conf", "att_unit=256", "--lm_conf", "head=4",
               "--lm_conf", "embed_unit=256", "--lm_conf", "pos_enc=null"]
    lm_args = LMTask.get_parser().parse_args(lm_argv)
    lm_args.token_list = tokens
    lm = LMTask.build_model(lm_args)
    (out / "lm.yaml").write_text(yaml.safe_dump(vars(lm_args)))
    torch.save(lm.state_dict(), out / "lm.pth")
    return str(out / "asr.yaml"), str(out / "asr.pth"), str(out / "lm.yaml"), str(out / "lm.pth")


def load_waves(wav_scp: str, n: int) -> Dict[str, np.ndarray]:
    waves = {}
    for line in open(wav_scp, encoding="utf-8"):
        key, path = line.split(maxsplit=1)
        waves[key] = soundfile.read(path.strip(), dtype="float32")[0]
        if len(waves) == n:
            break
    return waves


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_train_config")
    p.add_argument("--asr_model_file")
    p.add_argument("--lm_train_config")
    p.add_argument("--lm_file")
    p.add_argument("--wav_scp")
    p.add_argument("--utterances", type=int, default=24)
    p.add_argument("--slow_utterances", type=int, default=6)
    p.add_argument("--batch_seconds", type=float, default=100.0)
    p.add_argument("--lm_weight", type=float, default=0.6)
    p.add_argument("--beams", default="10,20")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--vocab", type=int, default=500)
    p.add_argument("--beam_batch_size", type=int, default=16,
                   help="utterances per batched beam search (ESPnet 202611 and later; 0: one at a time only)")
    args = p.parse_args()

    from espnet2.bin.asr_inference import Speech2Text
    from espnet2.tasks.asr import ASRTask

    from espnet_bertkd.compat import espnet_version, speech2text_decodes_batches

    tmp = Path(tempfile.mkdtemp())
    if args.asr_train_config is None:
        args.asr_train_config, args.asr_model_file, args.lm_train_config, args.lm_file = random_models(tmp, args.vocab)
        origin = "random-weight models (see docstring)"
    else:
        origin = args.asr_train_config
    if args.wav_scp:
        waves = load_waves(args.wav_scp, args.utterances)
    else:
        rng = np.random.default_rng(0)
        waves = {f"u{i:03d}": (0.1 * rng.standard_normal(int(RATE * rng.uniform(3, 12)))).astype(np.float32)
                 for i in range(args.utterances)}
    audio = sum(len(w) for w in waves.values()) / RATE
    model, _ = ASRTask.build_model_from_file(args.asr_train_config, args.asr_model_file, "cpu")
    model.eval()
    decoder = GreedyCTCDecoder(model)
    batches = length_sorted_batches({k: len(w) for k, w in waves.items()}, batch_samples=int(args.batch_seconds * RATE))
    tensors = []
    for batch in batches:
        arrays = [torch.from_numpy(waves[k]) for k in batch]
        tensors.append((torch.nn.utils.rnn.pad_sequence(arrays, batch_first=True),
                        torch.tensor([len(a) for a in arrays])))

    def greedy() -> None:
        for speech, lengths in tensors:
            decoder(speech, lengths)

    @torch.no_grad()
    def bare_encoder() -> None:
        for speech, lengths in tensors:
            model.encode(speech, lengths)

    greedy()  # warm-up
    fast = {"greedy CTC, batched (this plugin)": (greedy, []), "bare encoder forward, same batches": (bare_encoder, [])}
    for _ in range(args.repeats):  # alternate, so both see the same machine load
        for fn, times in fast.values():
            times.append(timed(fn, 1))
    rows: List[Tuple[str, float, float]] = [(name, statistics.median(t), audio) for name, (_, t) in fast.items()]

    slow = dict(list(waves.items())[: args.slow_utterances])
    slow_audio = sum(len(w) for w in slow.values()) / RATE
    configs = [("ESPnet asr_inference CTC beam 1", 1, 0.0)]
    configs += [(f"ESPnet beam {b} + LM shallow fusion (w={args.lm_weight})", int(b), args.lm_weight)
                for b in args.beams.split(",")]
    batch_sizes = [1] + ([args.beam_batch_size] if args.beam_batch_size > 1 and speech2text_decodes_batches() else [])
    for name, beam, weight in configs:
        one_at_a_time: List[str] = []
        for batch_size in batch_sizes:
            s2t = Speech2Text(asr_train_config=args.asr_train_config, asr_model_file=args.asr_model_file,
                              lm_train_config=args.lm_train_config if weight > 0 else None,
                              lm_file=args.lm_file if weight > 0 else None, lm_weight=weight, ctc_weight=1.0,
                              beam_size=beam, device="cpu", nbest=1, batch_size=batch_size)
            hyps: List[str] = []

            def run() -> None:
                hyps.clear()
                waves_ = list(slow.values())
                if batch_size == 1:
                    hyps.extend(s2t(w)[0][0] for w in waves_)
                else:
                    for i in range(0, len(waves_), batch_size):
                        hyps.extend(nbest[0][0] for nbest in s2t.batch_decode(waves_[i : i + batch_size]))

            seconds = timed(run, 1)
            if batch_size == 1:
                one_at_a_time = list(hyps)
                rows.append((f"{name}, one at a time", seconds, slow_audio))
            else:
                same = sum(a == b for a, b in zip(hyps, one_at_a_time))
                rows.append((f"{name}, batched x{batch_size} ({same}/{len(hyps)} hyps same)", seconds, slow_audio))

    print(f"models: {origin}; {len(waves)} utterances, {audio:.1f} s of audio ({args.slow_utterances} utterances, "
          f"{slow_audio:.1f} s for the ESPnet decoders); ESPnet {espnet_version()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, CPU")
    greedy_rtf = rows[0][1] / rows[0][2]
    width = max(len(name) for name, _, _ in rows)
    print(f"{'decoder':{width}s} {'seconds':>8s} {'RTF':>8s} {'x slower than greedy':>21s}")
    for name, seconds, secs_audio in rows:
        rtf = seconds / secs_audio
        print(f"{name:{width}s} {seconds:8.2f} {rtf:8.4f} {rtf / greedy_rtf:21.1f}")


if __name__ == "__main__":
    main()
