"""ESPnet's `espnet2.bin.asr_inference` with the plugin registered (same arguments, plus `--batch_size auto`).

The ASR model file must match its config key for key (ESPnet alone loads it non-strictly and silently).
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
from espnet_bertkd.asr.checkpoint import strict_model_loading
from espnet_bertkd.asr.speed import timed_speech2text

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
    with strict_model_loading(), timed_speech2text(args.output_dir):
        asr_inference.main(argv)


if __name__ == "__main__":
    main()
