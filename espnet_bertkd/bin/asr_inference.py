"""ESPnet's `espnet2.bin.asr_inference` with the plugin registered (same arguments, plus `--batch_size auto`).

The ASR model file must match its config key for key (ESPnet alone loads it non-strictly and silently), and the
ASR and LM model files are read as weights only, refused before ESPnet reads them if they hold anything else.
Before any model is loaded, --output_dir must be writable and `sound` inputs must be at the model's sample rate
(read from their headers; ESPnet itself decodes other rates without a word). Integer-PCM `kaldi_ark` audio, which
ESPnet hands to the model unscaled, is refused when the model was trained on `sound` audio: the first utterance is
read to tell (espnet_bertkd.bin.ctc_greedy_inference scales it instead).
It also writes OUTPUT_DIR/speed.json (time inside ESPnet's Speech2Text calls, audio seconds, RTF, utt/s), so beam
search rows in RESULTS.md are timed like the greedy decoder's.

`--batch_size auto` picks the faster search that the installed ESPnet offers on the device: AUTO_BATCH_SIZE
utterances in one batched beam search (202611's `Speech2Text.batch_decode`) on a GPU, one utterance at a time on
the CPU and under 202511 (which refuses `--batch_size > 1`). On 2 CPU cores the batched search was the slower one
with an LM: beam 10 + LM 1.8x and beam 20 + LM 2.4x the time of one at a time (benchmarks/README.md).
"""
import sys
from typing import List, Optional

import espnet_bertkd  # noqa: F401  (registers model: bertkd once ESPnet's ASR task is imported)
from espnet_bertkd.asr.checkpoint import ModelFileError, strict_model_loading
from espnet_bertkd.asr.speed import start_decoding, timed_speech2text

AUTO_BATCH_SIZE = 16


def auto_batch_size(decodes_batches: bool, ngpu: int) -> int:
    return AUTO_BATCH_SIZE if decodes_batches and ngpu > 0 else 1


def resolve_batch_size(argv: List[str], batch_size: int) -> List[str]:
    """`--batch_size auto` (or `--batch_size=auto`) -> `batch_size`; every other argument as it is."""
    value = str(batch_size)
    out: List[str] = []
    for i, arg in enumerate(argv):
        if arg == "auto" and i > 0 and argv[i - 1] == "--batch_size":
            out.append(value)
        elif arg == "--batch_size=auto":
            out.append(f"--batch_size={value}")
        else:
            out.append(arg)
    return out


def check_inputs(args) -> Optional[int]:
    """--output_dir writable; audio at the model's sample rate; no integer PCM the model was not trained on. The
    `sound` inputs' headers are all read (cheap); of a `kaldi_ark` input only the first utterance (reading them all
    would load the whole set once more). Returns the model's sample rate (None: no front-end, or no config)."""
    from espnet2.train.dataset import ESPnetDataset

    from espnet_bertkd.asr.decode_inputs import check_audio, check_output_dir, model_sample_rate
    from espnet_bertkd.tasks.audio import check_speech_input
    from espnet_bertkd.utils.fileio import read_keys

    check_output_dir(args.output_dir)
    if args.asr_train_config is None:
        return None
    model_rate = model_sample_rate(args.asr_train_config)
    for path, name, kind in args.data_path_and_name_and_type:
        if name != "speech" or kind not in ("sound", "kaldi_ark"):
            continue
        # Entries as their loader reads them, before anything reads one: a command entry (`cmd |`) is refused here,
        # never run; missing files and ark offsets outside their ark are named (DataError, a ValueError)
        check_speech_input([f"{path},{name},{kind}"], args.key_file, args.asr_train_config)
        dataset = ESPnetDataset([(path, name, kind)], float_dtype="float32")
        keys = list(dataset.loader_dict["speech"].keys())
        if args.key_file:
            wanted = set(read_keys(args.key_file))
            keys = [k for k in keys if k in wanted]
        if kind == "kaldi_ark":
            keys = keys[:1]
        if check_audio(path, kind, keys, dataset, model_rate, args.asr_train_config):
            raise ValueError(
                f"{path}: utterance {keys[0]} is integer PCM (a wav-in-ark), which ESPnet's kaldi_ark loader gives "
                f"the model unscaled, while {args.asr_train_config} was trained on audio in [-1, 1): the hypotheses "
                "would be wrong. Decode a `sound` wav.scp of the same audio, or use "
                "espnet_bertkd.bin.ctc_greedy_inference, which scales it."
            )
    return model_rate


def main(argv: Optional[List[str]] = None) -> None:
    from espnet2.bin import asr_inference

    from espnet_bertkd.compat import espnet_version, speech2text_decodes_batches

    argv = sys.argv[1:] if argv is None else list(argv)
    if "auto" in argv or "--batch_size=auto" in argv:
        ngpu = asr_inference.get_parser().parse_args(resolve_batch_size(argv, 1)).ngpu
        batch_size = auto_batch_size(speech2text_decodes_batches(), ngpu)
        argv = resolve_batch_size(argv, batch_size)
        print(f"asr_inference: --batch_size auto = {batch_size} (ESPnet {espnet_version()}, ngpu {ngpu})",
              file=sys.stderr)  # before ESPnet configures logging
    args = asr_inference.get_parser().parse_args(argv)
    try:
        model_rate = check_inputs(args)
    except ValueError as e:
        sys.exit(f"asr_inference: {e}")
    start_decoding(args.output_dir)  # unfinished (no speed.json) until ESPnet's decoding is done
    try:
        with strict_model_loading(), timed_speech2text(args.output_dir, fs=model_rate or 16000):
            asr_inference.main(argv)
    except ModelFileError as e:
        sys.exit(f"asr_inference: {e}")


if __name__ == "__main__":
    main()
