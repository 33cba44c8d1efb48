r"""Estimate a word n-gram LM (interpolated modified Kneser-Ney, ARPA) on the LM training text and write the lexicon
that spells its words in an ASR token list, for ctc_lm_inference.

    python -m espnet_bertkd.recipe.bin.train_ngram --text data/lm_train.txt --output_dir exp/ngram \
        --token_list data/token_list/char/tokens.txt --token_type char [--bpemodel M] [--order 3] \
        [--estimator auto|kenlm|python] [--kenlm_bin DIR] [--kenlm_memory 20%]

Writes OUTPUT_DIR/lm.arpa, OUTPUT_DIR/lexicon.txt (`WORD<TAB>TOKEN ...`; words the token list cannot spell are left
out and counted), OUTPUT_DIR/lm.bin with KenLM's build_binary, and OUTPUT_DIR/ngram.json (the estimator, orders,
counts, what was left out, `lm`: the file to decode with), each atomically. Input is Kaldi text (`<id> <words>`, as
data/lm_train.txt; --no_ids for plain lines).

Two estimators of the same model: KenLM's `lmplz` (espnet_bertkd.recipe.kenlm; on-disk sorting, any text size),
used by `auto` when it is on the PATH or in --kenlm_bin, as ESPnet's asr.sh uses it; else plain Python with every
count in memory (espnet_bertkd.recipe.ngram: about 0.6 GiB and 20 s per million words), which refuses a text of more
than --max_python_words words (default 10M: LibriSpeech 960 h's transcripts fit, its 800M-word LM corpus does not).
"""
import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

from espnet_bertkd.recipe.kenlm import KenLMError, find_kenlm, run_build_binary, run_lmplz
from espnet_bertkd.recipe.ngram import estimate, read_sentences
from espnet_bertkd.utils.fileio import atomic_open, atomic_write_text


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", action="append", required=True, help="training text; repeatable")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--no_ids", action="store_true", help="input lines have no utterance id")
    p.add_argument("--token_list", default=None, help="the ASR token list; with it, OUTPUT_DIR/lexicon.txt")
    p.add_argument("--token_type", default="char", choices=["char", "bpe"])
    p.add_argument("--bpemodel", default=None)
    p.add_argument("--estimator", default="auto", choices=["auto", "kenlm", "python"],
                   help="auto: KenLM's lmplz when found, else the Python estimator")
    p.add_argument("--kenlm_bin", default=None, help="directory of lmplz and build_binary (default: the PATH)")
    p.add_argument("--kenlm_memory", default="20%", help="lmplz -S: its sort memory (share of RAM or e.g. 4G)")
    p.add_argument("--max_python_words", type=int, default=MAX_PYTHON_WORDS,
                   help="the Python estimator refuses more words than this (its counts are held in memory)")
    return p


MAX_PYTHON_WORDS = 10_000_000


def count_words(paths: List[str], skip_key: bool, limit: int) -> int:
    """Words in the texts, counted without keeping them; stops counting past `limit`."""
    total = 0
    for path in paths:
        for words in read_sentences(path, skip_key=skip_key):
            total += len(words)
            if total > limit:
                return total
    return total


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s (train_ngram) %(message)s")
    for path in args.text:
        if not Path(path).is_file():
            sys.exit(f"train_ngram: --text {path}: no such file")
    if args.token_list and not Path(args.token_list).is_file():
        sys.exit(f"train_ngram: --token_list {args.token_list}: no such file")
    if args.token_type == "bpe" and args.token_list and not args.bpemodel:
        sys.exit("train_ngram: --token_type bpe needs --bpemodel")
    if args.order < 1:
        sys.exit(f"train_ngram: --order must be >= 1, not {args.order}")
    kenlm = None if args.estimator == "python" else find_kenlm(args.kenlm_bin)
    if args.estimator == "kenlm" and kenlm is None:
        sys.exit(f"train_ngram: --estimator kenlm: no lmplz in {args.kenlm_bin or 'the PATH'} (how to build it: "
                 "espnet_bertkd/recipe/kenlm.py, or the README)")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    def sentences():
        for path in args.text:
            yield from read_sentences(path, skip_key=not args.no_ids)

    info = {"text": args.text, "order": args.order}
    if kenlm is not None:
        logging.info("estimating with %s", kenlm.lmplz)
        try:
            run_lmplz(kenlm, sentences(), args.order, out / "lm.arpa", memory=args.kenlm_memory)
            if kenlm.build_binary:
                run_build_binary(kenlm, out / "lm.arpa", out / "lm.bin")
        except KenLMError as e:
            sys.exit(f"train_ngram: {e}")
        from espnet_bertkd.asr.lexicon_ctc import arpa_vocabulary

        vocab = sorted(w for w in arpa_vocabulary(out / "lm.arpa") if w != "<s>")
        info.update(estimator="kenlm", lmplz=kenlm.lmplz, build_binary=kenlm.build_binary,
                    lm="lm.bin" if kenlm.build_binary else "lm.arpa")
    else:
        n_words = count_words(args.text, not args.no_ids, args.max_python_words)
        if n_words > args.max_python_words:
            sys.exit(f"train_ngram: the text has more than --max_python_words {args.max_python_words} words: too big "
                     "for the Python estimator, which holds every count in memory (about 0.6 GiB per million words). "
                     "Put KenLM's lmplz on the PATH (or pass --kenlm_bin DIR; how to build it: "
                     "espnet_bertkd/recipe/kenlm.py), or raise --max_python_words if the memory is there.")
        sents = list(sentences())
        try:
            model = estimate(sents, args.order)
        except ValueError as e:
            sys.exit(f"train_ngram: {e}")
        vocab = model.vocab
        info.update(estimator="python", sentences=len(sents), ngrams=[len(p) for p in model.prob],
                    discounts=model.discounts, lm="lm.arpa")
    info["vocabulary"] = len(vocab)
    if args.token_list:
        from espnet2.text.build_tokenizer import build_tokenizer

        from espnet_bertkd.asr.lexicon_ctc import spell, write_lexicon

        token_list = [t.strip() for t in Path(args.token_list).read_text(encoding="utf-8").splitlines() if t.strip()]
        tokenizer = build_tokenizer(token_type=args.token_type, bpemodel=args.bpemodel)
        lexicon, unspellable = spell(vocab, token_list, tokenizer)
        with atomic_open(out / "lexicon.txt") as f:
            write_lexicon(lexicon, f)
        info.update(lexicon_words=len(lexicon), unspellable=unspellable[:20], unspellable_count=len(unspellable))
        if unspellable:
            logging.warning("%d words the token list cannot spell are left out of the lexicon, e.g. %s",
                            len(unspellable), unspellable[:5])
    if kenlm is None:
        model.write_arpa(out / "lm.arpa")
    atomic_write_text(out / "ngram.json", json.dumps(info, indent=2) + "\n")
    logging.info("%d-gram LM (%s) -> %s", args.order, info["estimator"], out / info["lm"])


if __name__ == "__main__":
    main(sys.argv[1:])
