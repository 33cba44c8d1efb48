r"""Validate a Kaldi-style data directory, as Kaldi's utils/validate_data_dir.sh --no-feats does.

    python -m espnet_bertkd.recipe.bin.validate_data_dir data/test_clean [--check_audio] [--fs 16000] \
        [--allowed_chars librispeech] [--allow_empty_text] [--fix [--drop_empty_text]]

Checks sorting (C order), duplicate keys, identical utterance lists in wav.scp/text/utt2spk, spk2utt against
utt2spk, audio files (exist; with --check_audio readable and non-empty; with --fs the sample rate) and transcripts.
Each problem names the file, the line and the utterance; exit status 1 if there is any. --fix first strips a
byte-order mark and DOS line endings, sorts the tables and keeps only the utterances present in all of them (originals
in DATA_DIR/.backup/), as fix_data_dir.sh.
"""
import argparse
import logging
import sys
from typing import List, Optional

from espnet_bertkd.recipe.datadir import fix_data_dir
from espnet_bertkd.tasks.data_check import CHARSETS, validate_data_dir
from espnet_bertkd.utils.fileio import DataError


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir")
    p.add_argument("--check_audio", action="store_true", help="open every audio file's header")
    p.add_argument("--fs", type=int, default=None, help="expected sample rate (implies reading headers)")
    p.add_argument("--allowed_chars", default=None,
                   help=f"allowed transcript characters (whitespace always allowed) or one of {sorted(CHARSETS)}")
    p.add_argument("--allow_empty_text", action="store_true", help="empty transcripts are warnings, not errors")
    p.add_argument("--no_text", action="store_true", help="the directory has no text file")
    p.add_argument("--fix", action="store_true", help="strip BOM/CRLF, sort and filter the tables first (fix_data_dir)")
    p.add_argument("--drop_empty_text", action="store_true", help="with --fix: drop empty transcripts")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(levelname)s: %(message)s")
    try:
        if args.fix:
            kept, dropped = fix_data_dir(args.data_dir, drop_empty_text=args.drop_empty_text)
            print(f"{args.data_dir}: fixed ({kept} utterances kept, {dropped} dropped)")
        report = validate_data_dir(args.data_dir, check_audio=args.check_audio, fs=args.fs,
                                   allowed_chars=args.allowed_chars, allow_empty_text=args.allow_empty_text,
                                   require_text=not args.no_text)
    except DataError as e:
        sys.exit(f"validate_data_dir: {args.data_dir}: {e}")
    print(f"{args.data_dir}: OK ({report.utterances} utterances, {report.speakers} speakers, "
          f"{len(report.warnings)} warnings)")


if __name__ == "__main__":
    main(sys.argv[1:])
