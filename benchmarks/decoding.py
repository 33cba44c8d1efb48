"""Decoding speed: batched greedy CTC vs ESPnet's asr_inference (CTC beam 1, and beam search with LM shallow fusion).

    python benchmarks/decoding.py [--asr_train_config C --asr_model_file M --lm_train_config LC --lm_file LM
                                   --wav_scp data/test/wav.scp] [--utterances 24] [--slow_utterances 6]
                                  [--beam_batch_size 16] [--batch_seconds 100,400] [--device cuda]
                                  [--dtype bfloat16] [--ngram_arpa A --lexicon L] [--ngram_beams 50]

Each ESPnet search runs one utterance at a time and, where the installed ESPnet has it (202611's
`Speech2Text.batch_decode`), also as one batched beam search over --beam_batch_size utterances, so greedy is
compared with the fastest search ESPnet offers (and with flashlight's C++ lexicon CTC beam search + word n-gram via
torchaudio's ctc_decoder, on every utterance: --ngram_arpa/--lexicon, or an n-gram built on random text for
random-weight models); the batched rows also say how many hypotheses equal the
one-at-a-time search's. The greedy rows run at each --batch_seconds beside a bare `model.encode` on the same batches
and beside greedy's plain reference path (the front-end one utterance at a time), and print greedy / encoder; with
--dtype they run again in that dtype and say how many hypotheses equal float32's. --slow_utterances 0 skips ESPnet.

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
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synchronize() -> None:
    """Wait for queued GPU work, so a timing covers it (a no-op on the CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def padded_batches(
    waves: Dict[str, np.ndarray], batch_seconds: float, device: str, dtype: torch.dtype
) -> List[Tuple[List[str], torch.Tensor, torch.Tensor]]:
    """Length-sorted batches of at most `batch_seconds` padded audio, as ctc_greedy_inference makes them."""
    out = []
    for keys in length_sorted_batches({k: len(w) for k, w in waves.items()}, batch_samples=int(batch_seconds * RATE)):
        arrays = [torch.from_numpy(waves[k]) for k in keys]
        speech = torch.nn.utils.rnn.pad_sequence(arrays, batch_first=True).to(device, dtype)
        out.append((keys, speech, torch.tensor([len(a) for a in arrays], device=device)))
    return out


def greedy_rows(
    model: torch.nn.Module, waves: Dict[str, np.ndarray], batch_seconds: float, device: str, dtype: torch.dtype,
    repeats: int,
) -> Tuple[List[Tuple[str, float]], Dict[str, List[int]]]:
    """Greedy decoding (batched framing, and the per-utterance front-end reference) against a bare `model.encode` on
    the same batches, alternating so all see the same machine load: (name, median seconds) rows and the hypotheses."""
    batches = padded_batches(waves, batch_seconds, device, dtype)
    fast, reference = GreedyCTCDecoder(model), GreedyCTCDecoder(model, batched_frontend=False)
    hyps: Dict[str, List[int]] = {}

    def greedy() -> None:
        for keys, speech, lengths in batches:
            hyps.update({k: r.token_int for k, r in zip(keys, fast(speech, lengths))})

    def per_utterance_frontend() -> None:
        for _, speech, lengths in batches:
            reference(speech, lengths)

    @torch.no_grad()
    def bare_encoder() -> None:
        for _, speech, lengths in batches:
            model.encode(speech, lengths)

    label = f"{batch_seconds:g} s batches"
    runs = {f"greedy CTC, batched ({label})": (greedy, []),
            f"bare encoder forward (`model.encode`), {label}": (bare_encoder, []),
            f"greedy CTC, per-utterance front-end (the reference path), {label}": (per_utterance_frontend, [])}
    for fn, _ in runs.values():
        fn()  # warm-up
    for _ in range(repeats):
        for fn, times in runs.values():
            times.append(timed(fn, 1))
    return [(name, statistics.median(times)) for name, (_, times) in runs.items()], hyps


def random_ngram(out: Path, token_list: List[str], order: int = 3) -> Tuple[str, str]:
    """For random-weight models: a word n-gram (espnet_bertkd.recipe.ngram) on random sentences over the model's
    vocabulary, and the lexicon spelling each token-word as itself (word tokens: no separator token, so flashlight's
    silence is the blank). Speed does not need a sensible LM, only one of the usual size and branching."""
    from espnet_bertkd.recipe.ngram import estimate

    words = [t for t in token_list if not t.startswith("<")]
    rng = np.random.default_rng(0)
    zipf = 1.0 / np.arange(1, len(words) + 1)
    sentences = [[words[i] for i in rng.choice(len(words), size=int(rng.integers(5, 25)), p=zipf / zipf.sum())]
                 for _ in range(20000)]
    estimate(sentences, order).write_arpa(out / "ngram.arpa")
    (out / "lexicon.txt").write_text("".join(f"{w}\t{w}\n" for w in words), encoding="utf-8")
    return str(out / "ngram.arpa"), str(out / "lexicon.txt")


def ngram_rows(
    model: torch.nn.Module, waves: Dict[str, np.ndarray], args: argparse.Namespace, tmp: Path, random_weights: bool,
) -> List[Tuple[str, float, float]]:
    """flashlight's lexicon CTC beam search (torchaudio's ctc_decoder, C++) with a word n-gram through KenLM, and the
    same search without an LM, on the greedy decoder's batched encoder (espnet_bertkd.asr.lexicon_ctc): the decoder a
    practitioner would pick instead of ESPnet's Python beam search. Every utterance, median of --repeats runs."""
    from espnet_bertkd.asr.lexicon_ctc import LexiconCTCDecoder, require_flashlight

    try:
        require_flashlight()
    except ImportError as e:
        print(f"no flashlight rows: {e}")
        return []
    arpa, lexicon = args.ngram_arpa, args.lexicon
    if arpa is None and random_weights:
        arpa, lexicon = random_ngram(tmp, list(model.token_list))
    if arpa is None or lexicon is None:
        print("no flashlight rows: a trained model needs --ngram_arpa and --lexicon (asr.sh stage 5's ${lm_exp}_ngram)")
        return []
    batches = padded_batches(waves, float(args.batch_seconds.split(",")[0]), args.device, torch.float32)
    audio = sum(len(w) for w in waves.values()) / RATE
    encoder = GreedyCTCDecoder(model)
    rows = []
    searches = [(f"flashlight lexicon CTC beam {b} + word n-gram (KenLM, w={args.ngram_lm_weight:g})", int(b), arpa)
                for b in args.ngram_beams.split(",")]
    searches.append((f"flashlight lexicon CTC beam {searches[0][1]}, no LM", searches[0][1], None))
    for name, beam, lm in searches:
        decoder = LexiconCTCDecoder(encoder, lexicon, lm=lm, lm_weight=args.ngram_lm_weight,
                                    word_score=args.ngram_word_score, beam_size=beam)

        def run() -> None:
            for _, speech, lengths in batches:
                decoder(speech, lengths)

        run()  # warm-up
        rows.append((name, timed(run, args.repeats), audio))
    if args.word_lm_bonus is not None and args.slow_utterances:
        rows.append(transformer_word_lm_row(encoder, lexicon, waves, args, tmp))
    return rows


def transformer_word_lm_row(encoder: GreedyCTCDecoder, lexicon: str, waves: Dict[str, np.ndarray],
                            args: argparse.Namespace, tmp: Path) -> Tuple[str, float, float]:
    """The lexicon search with the ESPnet Transformer LM scoring words token by token through a Python CTCDecoderLM
    (espnet_bertkd.asr.lexicon_ctc.token_lm_for_words): one pass over the --slow_utterances, LM built beforehand."""
    from espnet2.tasks.lm import LMTask

    from espnet_bertkd.asr.lexicon_ctc import LexiconCTCDecoder, read_lexicon, token_lm_for_words, write_word_dict

    lm, _ = LMTask.build_model_from_file(args.lm_train_config, args.lm_file, args.device)
    lm.eval()
    words = write_word_dict(lexicon, tmp / "words.txt")
    scorer = token_lm_for_words(lm, list(encoder.model.token_list), read_lexicon(lexicon), words,
                                token_bonus=args.word_lm_bonus, device=args.device)
    beam = int(args.ngram_beams.split(",")[0])
    decoder = LexiconCTCDecoder(encoder, lexicon, lm=scorer, lm_weight=args.lm_weight, beam_size=beam,
                                lm_dict=tmp / "words.txt")
    slow = dict(list(waves.items())[: args.slow_utterances])
    batches = padded_batches(slow, float(args.batch_seconds.split(",")[0]), args.device, torch.float32)
    calls = scorer.calls

    def run() -> None:
        for _, speech, lengths in batches:
            decoder(speech, lengths)

    seconds = timed(run, 1)
    name = (f"flashlight lexicon CTC beam {beam} + Transformer LM per word (CTCDecoderLM, w={args.lm_weight:g}, "
            f"bonus {args.word_lm_bonus:g}/token; {scorer.calls - calls} LM steps)")
    return name, seconds, sum(len(w) for w in slow.values()) / RATE


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_train_config")
    p.add_argument("--asr_model_file")
    p.add_argument("--lm_train_config")
    p.add_argument("--lm_file")
    p.add_argument("--wav_scp")
    p.add_argument("--utterances", type=int, default=24)
    p.add_argument("--slow_utterances", type=int, default=6)
    p.add_argument("--batch_seconds", default="100,400",
                   help="comma-separated padded seconds per greedy batch; each gets its greedy / encoder rows")
    p.add_argument("--lm_weight", type=float, default=0.6)
    p.add_argument("--beams", default="10,20")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--vocab", type=int, default=500)
    p.add_argument("--beam_batch_size", type=int, default=16,
                   help="utterances per batched beam search (ESPnet 202611 and later; 0: one at a time only)")
    p.add_argument("--device", default="cpu", help="cpu or cuda: where every decoder runs")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="the greedy rows also run in this dtype (model and audio, as ctc_greedy_inference --dtype)")
    p.add_argument("--ngram_arpa", default=None,
                   help="word n-gram (ARPA or KenLM binary) for the flashlight rows (random-weight models: built here)")
    p.add_argument("--lexicon", default=None, help="its lexicon in the model's tokens (recipe/bin/train_ngram)")
    p.add_argument("--ngram_lm_weight", type=float, default=1.0)
    p.add_argument("--ngram_word_score", type=float, default=0.0)
    p.add_argument("--ngram_beams", default="50",
                   help="comma-separated flashlight beam sizes ('': no flashlight rows)")
    p.add_argument("--word_lm_bonus", type=float, default=None,
                   help="also run flashlight's lexicon search with the Transformer LM (--lm_train_config/--lm_file) "
                        "scoring each word through torchaudio's CTCDecoderLM, this bonus per token, on the "
                        "--slow_utterances (slow: one LM call per hypothesis and word)")
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
    model, _ = ASRTask.build_model_from_file(args.asr_train_config, args.asr_model_file, args.device)
    model.eval()

    rows: List[Tuple[str, float, float]] = []
    ratios: List[str] = []
    fp32_hyps: Dict[str, List[int]] = {}
    for batch_seconds in [float(x) for x in args.batch_seconds.split(",")]:
        for dtype in dict.fromkeys(["float32", args.dtype]):
            model.to(dtype=getattr(torch, dtype))
            timings, hyps = greedy_rows(model, waves, batch_seconds, args.device, getattr(torch, dtype), args.repeats)
            tag = "" if dtype == "float32" else f" [{dtype}]"
            rows += [(name + tag, seconds, audio) for name, seconds in timings]
            (_, greedy_s), (_, encoder_s), (_, reference_s) = timings
            ratios.append(f"{batch_seconds:g} s batches{tag}: greedy / encoder = {greedy_s / encoder_s:.2f}, "
                          f"per-utterance front-end / encoder = {reference_s / encoder_s:.2f}")
            if dtype == "float32":
                fp32_hyps = fp32_hyps or hyps
            else:
                same = sum(hyps[k] == fp32_hyps[k] for k in hyps)
                ratios.append(f"{batch_seconds:g} s batches{tag}: {same}/{len(hyps)} hypotheses equal float32's")
    model.to(dtype=torch.float32)
    if args.ngram_beams:
        rows += ngram_rows(model, waves, args, tmp, random_weights=origin.startswith("random"))

    slow = dict(list(waves.items())[: args.slow_utterances])
    slow_audio = sum(len(w) for w in slow.values()) / RATE
    configs = [("ESPnet asr_inference CTC beam 1", 1, 0.0)]
    configs += [(f"ESPnet beam {b} + LM shallow fusion (w={args.lm_weight})", int(b), args.lm_weight)
                for b in args.beams.split(",")]
    batch_sizes = [1] + ([args.beam_batch_size] if args.beam_batch_size > 1 and speech2text_decodes_batches() else [])
    for name, beam, weight in configs if slow else []:
        one_at_a_time: List[str] = []
        for batch_size in batch_sizes:
            s2t = Speech2Text(asr_train_config=args.asr_train_config, asr_model_file=args.asr_model_file,
                              lm_train_config=args.lm_train_config if weight > 0 else None,
                              lm_file=args.lm_file if weight > 0 else None, lm_weight=weight, ctc_weight=1.0,
                              beam_size=beam, device=args.device, nbest=1, batch_size=batch_size)
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
          f"threads {torch.get_num_threads()}, "
          f"{torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'}")
    for line in ratios:
        print(line)
    greedy_rtf = rows[0][1] / rows[0][2]
    width = max(len(name) for name, _, _ in rows)
    print(f"{'decoder':{width}s} {'seconds':>8s} {'RTF':>8s} {'x slower than greedy':>21s}")
    for name, seconds, secs_audio in rows:
        rtf = seconds / secs_audio
        print(f"{name:{width}s} {seconds:8.2f} {rtf:8.4f} {rtf / greedy_rtf:21.1f}")


if __name__ == "__main__":
    main()
