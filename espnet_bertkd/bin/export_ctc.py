"""Export a `model: bertkd` checkpoint as a plain ESPnet CTC model (no plugin needed to load it).

    python -m espnet_bertkd.bin.export_ctc --asr_train_config exp/asr_x/config.yaml \
        --asr_model_file exp/asr_x/valid.cer_ctc.best.pth --output_dir exp/asr_x/export
"""
import argparse
import sys
from typing import List, Optional

from espnet_bertkd.asr.export import MismatchedWeights, export_ctc
from espnet_bertkd.utils.cli import add_overwrite


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_train_config", required=True)
    p.add_argument("--asr_model_file", required=True)
    p.add_argument("--output_dir", required=True)
    add_overwrite(p, "an --output_dir that export_ctc did not make")
    args = p.parse_args(argv)
    try:
        config, model, params = export_ctc(args.asr_train_config, args.asr_model_file, args.output_dir,
                                            overwrite=args.overwrite)
    except (ValueError, OSError, MismatchedWeights) as e:
        # a refused model file, a config that is not `model: bertkd`, a bad path, the weights of another model
        sys.exit(f"export_ctc: {e}")
    print(f"wrote {config} and {model} ({params} parameters)")


if __name__ == "__main__":
    main(sys.argv[1:])
