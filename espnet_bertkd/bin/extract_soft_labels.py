"""Write teacher soft labels for an ESPnet `text` file (cached teacher mode).

    python -m espnet_bertkd.bin.extract_soft_labels --teacher bert-base-uncased \
        --text data/train/text --output_dir dump/kd/train [--nj 8 --job 3] [--topk 8 --temperature 1]

Run with `--job J` in N parallel processes (same --nj), or without `--job` to run all jobs here. Re-running
resumes; the last job to finish writes kd_token.scp and kd_prob.scp. See espnet_bertkd.kd.extract.
"""
import argparse
import logging
import os
import sys
from typing import List, Optional

from espnet_bertkd.kd.extract import extract
from espnet_bertkd.kd.teacher_config import TEACHER_DTYPES, TeacherConfig


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="hub id or local directory of a Hugging Face masked LM")
    p.add_argument("--text", required=True, help="ESPnet/Kaldi text file: <utt_id> <transcript>")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--topk", type=int, default=8)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--keep_special", action="store_true",
                   help="keep the teacher's special tokens in the top k (default: dropped, as Futami et al.)")
    p.add_argument("--context_utterances", type=int, default=0,
                   help="neighbouring transcripts of the same speaker/chapter seen on each side (not labelled)")
    p.add_argument("--utt2spk", default=None,
                   help="groups for --context_utterances (default: utt2spk beside --text, else the utt-id prefix)")
    p.add_argument("--nj", type=int, default=1, help="number of jobs the utterances are split into")
    p.add_argument("--job", type=int, default=None, help="run only this job (1-based); default: all")
    p.add_argument("--chunk_size", type=int, default=500, help="utterances per resumable chunk")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=list(TEACHER_DTYPES))
    p.add_argument("--max_length", type=int, default=None, help="teacher window in tokens (default: model max)")
    p.add_argument("--max_tokens_per_batch", type=int, default=16384)
    p.add_argument("--log_level", default="INFO")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    utt2spk = args.utt2spk
    if utt2spk is None and args.context_utterances > 0:
        beside = os.path.join(os.path.dirname(args.text), "utt2spk")
        utt2spk = beside if os.path.exists(beside) else None
    config = TeacherConfig(
        model=args.teacher, topk=args.topk, temperature=args.temperature, dtype=args.dtype,
        max_length=args.max_length, max_tokens_per_batch=args.max_tokens_per_batch,
        drop_special=not args.keep_special,
    )
    merged = extract(args.text, args.output_dir, config, nj=args.nj, job=args.job,
                     context_utterances=args.context_utterances, utt2spk=utt2spk,
                     chunk_size=args.chunk_size, device=args.device)
    if not merged:
        logging.info("job %s done; other jobs are still missing, the last one to finish merges", args.job)


if __name__ == "__main__":
    main(sys.argv[1:])
