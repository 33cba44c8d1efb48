"""Write teacher soft labels for an ESPnet `text` file (cached teacher mode).

    python -m espnet_bertkd.bin.extract_soft_labels --asr_config conf/train_asr_inter_aed_kd.yaml \
        --text data/train/text --output_dir dump/kd/train [--nj 8 --job 3] [--teacher /models/bert-base-uncased]
    python -m espnet_bertkd.bin.extract_soft_labels --teacher bert-base-uncased \
        --text data/train/text --output_dir dump/kd/train [--topk 8 --temperature 1]

With --asr_config the teacher is the training config's model_conf.teacher (model, topk, temperature, drop_special,
dtype, max_length, max_tokens_per_batch): the soft labels are the ones that config reads. --teacher then replaces
only the model's location (as `--model_conf teacher.model=...` does in training); --topk, --temperature,
--keep_special, --dtype and --max_length may repeat the config's values but not contradict them. Without
--asr_config, --teacher is required and the others default to TeacherConfig's defaults.

Run with `--job J` in N parallel processes (same --nj), or without `--job` to run all jobs here. Re-running
resumes (chunks whose arks went missing or short are redone); the last job to finish writes kd_token.scp,
kd_prob.scp and kd_text.hash (each utterance's text fingerprint, which training checks). Re-running on a finished
--output_dir recomputes only the utterances whose transcript changed, that are new or whose arks are broken, and is
a fast no-op when nothing changed. See espnet_bertkd.kd.extract.
"""
import argparse
import dataclasses
import logging
import os
import sys
from typing import List, Optional

from espnet_bertkd.kd.extract import extract
from espnet_bertkd.kd.requirements import read_teacher_config
from espnet_bertkd.kd.teacher_config import TEACHER_DTYPES, TeacherConfig


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr_config", default=None,
                   help="ESPnet ASR training config whose model_conf.teacher to extract with (the one source of truth)")
    p.add_argument("--teacher", default=None,
                   help="hub id or local directory of a Hugging Face masked LM (with --asr_config: replaces its "
                        "teacher.model, e.g. by a local copy)")
    p.add_argument("--text", required=True, help="ESPnet/Kaldi text file: <utt_id> <transcript>")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--topk", type=int, default=None, help="default: the config's, else 8")
    p.add_argument("--temperature", type=float, default=None, help="default: the config's, else 1")
    p.add_argument("--keep_special", action="store_true", default=None,
                   help="keep the teacher's special tokens in the top k (default: the config's drop_special, else "
                        "dropped, as Futami et al.)")
    p.add_argument("--context_utterances", type=int, default=0,
                   help="neighbouring transcripts of the same speaker/chapter seen on each side (not labelled)")
    p.add_argument("--utt2spk", default=None,
                   help="groups for --context_utterances (default: utt2spk beside --text, else the utt-id prefix)")
    p.add_argument("--nj", type=int, default=1, help="number of jobs the utterances are split into")
    p.add_argument("--job", type=int, default=None, help="run only this job (1-based); default: all")
    p.add_argument("--chunk_size", type=int, default=500, help="utterances per resumable chunk")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, choices=list(TEACHER_DTYPES), help="default: the config's, else float32")
    p.add_argument("--max_length", type=int, default=None,
                   help="teacher window in tokens (default: the config's, else the model's maximum)")
    p.add_argument("--max_tokens_per_batch", type=int, default=None,
                   help="padded tokens per teacher forward pass, a memory knob that leaves the soft labels as they "
                        "are (default: the config's, else 16384)")
    p.add_argument("--log_level", default="INFO")
    return p


# The options that set a field of the teacher block, and how an option's value reads as that field.
SETTINGS = {"topk": "topk", "temperature": "temperature", "keep_special": "drop_special", "dtype": "dtype",
            "max_length": "max_length"}


def teacher_config(args: argparse.Namespace) -> TeacherConfig:
    """The teacher block to extract with: the config's (--asr_config), else built from the options."""
    given = {field: (not value if option == "keep_special" else value)
             for option, field in SETTINGS.items() if (value := getattr(args, option)) is not None}
    if args.max_tokens_per_batch is not None:
        given["max_tokens_per_batch"] = args.max_tokens_per_batch
    if args.asr_config is None:
        if args.teacher is None:
            raise ValueError("give --asr_config CONFIG.yaml (its model_conf.teacher) or --teacher MODEL")
        return TeacherConfig(model=args.teacher, **given)
    config = read_teacher_config(args.asr_config, args.teacher)
    if config.mode != "cached":
        raise ValueError(f"{args.asr_config}: teacher.mode is {config.mode!r}: training runs the teacher itself and "
                         "reads no cached soft labels (set teacher.mode: cached to train from extracted ones)")
    conflicts = [f"--{option} {getattr(args, option)!r} but {args.asr_config} has teacher.{field}: "
                 f"{getattr(config, field)!r}" for option, field in SETTINGS.items()
                 if field in given and given[field] != getattr(config, field)]
    if conflicts:
        raise ValueError("the options contradict the training config (it is what training checks the soft labels "
                         "against: change it there, or leave the option out): " + "; ".join(conflicts))
    return dataclasses.replace(config, **given)


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    utt2spk = args.utt2spk
    if utt2spk is None and args.context_utterances > 0:
        beside = os.path.join(os.path.dirname(args.text), "utt2spk")
        utt2spk = beside if os.path.exists(beside) else None
    for name in ("nj", "chunk_size"):
        if getattr(args, name) < 1:
            sys.exit(f"extract_soft_labels: --{name} must be at least 1, got {getattr(args, name)}")
    if args.context_utterances < 0:
        sys.exit(f"extract_soft_labels: --context_utterances must be >= 0, got {args.context_utterances}")
    try:
        config = teacher_config(args)
        merged = extract(args.text, args.output_dir, config, nj=args.nj, job=args.job,
                         context_utterances=args.context_utterances, utt2spk=utt2spk,
                         chunk_size=args.chunk_size, device=args.device)
    except (ValueError, OSError) as e:
        # bad input (DataError: the text file, key and line; OutputDirError; TeacherLoadError is an OSError), an
        # unwritable --output_dir, a re-extraction with other settings: one line, no traceback
        sys.exit(f"extract_soft_labels: {e}")
    if not merged:
        logging.info("job %s done; other jobs are still missing, the last one to finish merges", args.job)


if __name__ == "__main__":
    main(sys.argv[1:])
