r"""Estimate a word n-gram LM (interpolated modified Kneser-Ney, ARPA; espnet_bertkd.recipe.ngram) on the LM training
text and write the lexicon that spells its words in an ASR token list, for ctc_lm_inference (no KenLM lmplz needed).

    python -m espnet_bertkd.recipe.bin.train_ngram --text data/lm_train.txt --output_dir exp/ngram \
        --token_list data/token_list/char/tokens.txt --token_type char [--bpemodel M] [--order 3]

Writes OUTPUT_DIR/lm.arpa, OUTPUT_DIR/lexicon.txt (`WORD<TAB>TOKEN ...`; words the token list cannot spell are left
out and counted) and OUTPUT_DIR/ngram.json (orders, counts, discounts, what was left out), each atomically.
Input is Kaldi text (`<id> <words>`, as data/lm_train.txt; --no_ids for plain lines).

The estimator is plain Python with every n-gram count in memory: right for transcripts (the embedded corpus,
LibriSpeech's 281k training transcripts), not for the 800M-word LibriSpeech LM corpus; for that, estimate the ARPA
with KenLM's `lmplz` and give it to ctc_lm_inference's --lm (its lexicon: this script with --order 1, or any tool).
"""
import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

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
    return p


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
    sentences = [s for path in args.text for s in read_sentences(path, skip_key=not args.no_ids)]
    try:
        model = estimate(sentences, args.order)
    except ValueError as e:
        sys.exit(f"train_ngram: {e}")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = {"text": args.text, "order": args.order, "sentences": len(sentences),
            "ngrams": [len(p) for p in model.prob], "discounts": model.discounts, "vocabulary": len(model.vocab)}
    if args.token_list:
        from espnet2.text.build_tokenizer import build_tokenizer

        from espnet_bertkd.asr.lexicon_ctc import spell, write_lexicon

        token_list = [t.strip() for t in Path(args.token_list).read_text(encoding="utf-8").splitlines() if t.strip()]
        tokenizer = build_tokenizer(token_type=args.token_type, bpemodel=args.bpemodel)
        lexicon, unspellable = spell(model.vocab, token_list, tokenizer)
        with atomic_open(out / "lexicon.txt") as f:
            write_lexicon(lexicon, f)
        info.update(lexicon_words=len(lexicon), unspellable=unspellable[:20], unspellable_count=len(unspellable))
        if unspellable:
            logging.warning("%d words the token list cannot spell are left out of the lexicon, e.g. %s",
                            len(unspellable), unspellable[:5])
    model.write_arpa(out / "lm.arpa")
    atomic_write_text(out / "ngram.json", json.dumps(info, indent=2) + "\n")
    logging.info("%d-gram LM (%s n-grams) -> %s", args.order, " / ".join(map(str, info["ngrams"])), out / "lm.arpa")


if __name__ == "__main__":
    main(sys.argv[1:])
