r"""Make Kaldi-style data directories from LibriSpeech, as ESPnet's egs2/librispeech local/data.sh does.

    python -m espnet_bertkd.recipe.bin.prepare_librispeech --root /data/LibriSpeech --data_dir data \
        dev-clean test-clean train-clean-100

Writes data/<set with '-' -> '_'>/{wav.scp,text,utt2spk,spk2utt[,spk2gender]} (speaker = <reader>-<chapter>,
wav.scp lists the absolute FLAC paths), then validates each directory.
"""
import argparse
import logging
import sys
from typing import List, Optional

from espnet_bertkd.tasks.data_check import validate_data_dir
from espnet_bertkd.recipe.librispeech import SETS, prepare_librispeech
from espnet_bertkd.utils.cli import add_overwrite
from espnet_bertkd.utils.fileio import DataError


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="directory holding the sets (e.g. .../LibriSpeech)")
    p.add_argument("--data_dir", default="data", help="where data/<set> directories are written")
    p.add_argument("sets", nargs="+", help=f"set names under ROOT, e.g. {' '.join(SETS)}")
    add_overwrite(p, "a data/<set> directory that prepare_librispeech did not make")
    p.add_argument("--log_level", default="INFO")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s: %(message)s")
    try:
        for name in args.sets:
            out = prepare_librispeech(args.root, name, args.data_dir, overwrite=args.overwrite)
            report = validate_data_dir(out)
            print(f"{out}: {report.utterances} utterances, {report.speakers} speakers")
    except DataError as e:
        sys.exit(f"prepare_librispeech: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
