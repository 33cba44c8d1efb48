"""ESPnet's `espnet2.bin.asr_inference` with the plugin registered (same arguments).

The ASR model file must match its config key for key (ESPnet alone loads it non-strictly and silently).
It also writes OUTPUT_DIR/speed.json (time inside ESPnet's Speech2Text calls, audio seconds, RTF, utt/s), so beam
search rows in RESULTS.md are timed like the greedy decoder's.
"""
import sys
from typing import List, Optional

import espnet_bertkd  # noqa: F401  (registers model: bertkd once ESPnet's ASR task is imported)
from espnet_bertkd.asr.checkpoint import strict_model_loading
from espnet_bertkd.asr.speed import timed_speech2text


def main(argv: Optional[List[str]] = None) -> None:
    from espnet2.bin import asr_inference

    argv = sys.argv[1:] if argv is None else argv
    args = asr_inference.get_parser().parse_args(argv)
    with strict_model_loading(), timed_speech2text(args.output_dir):
        asr_inference.main(argv)


if __name__ == "__main__":
    main()
