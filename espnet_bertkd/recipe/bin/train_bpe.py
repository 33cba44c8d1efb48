r"""Train a sentencepiece model and write ESPnet's token list, as asr.sh stage 5 does (no spm_train needed).

    python -m espnet_bertkd.recipe.bin.train_bpe --text data/lm_train.txt --output_dir data/token_list/bpe_unigram5000 \
        --vocab_size 5000 [--model_type unigram|bpe]
    python -m espnet_bertkd.recipe.bin.train_bpe --token_type char --text data/lm_train.txt --output_dir data/token_list/char

bpe: OUTPUT_DIR/{train.txt,bpe.model,bpe.vocab,tokens.txt}; tokens.txt = <blank>, <unk>, the pieces in the model's
order, <sos/eos>. char/word: OUTPUT_DIR/tokens.txt = <blank>, <unk>, tokens by count (<space> between words),
<sos/eos>; --vocab_size does not apply (a stage driver may pass it for every token type), --max_tokens caps it.
Input is Kaldi text (`<id> <words>`; --no_ids for plain lines).
"""
import argparse
import sys
from typing import List, Optional

from espnet_bertkd.recipe.tokens import make_token_list, train_bpe
from espnet_bertkd.utils.fileio import DataError


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", action="append", required=True, help="training text; repeatable")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--token_type", choices=["bpe", "char", "word"], default="bpe")
    p.add_argument("--vocab_size", type=int, default=None,
                   help="bpe: number of pieces (required); ignored for char/word, as asr.sh does")
    p.add_argument("--max_tokens", type=int, default=0, help="char/word: at most this many tokens (0: all)")
    p.add_argument("--model_type", choices=["unigram", "bpe"], default="unigram")
    p.add_argument("--character_coverage", type=float, default=1.0)
    p.add_argument("--input_sentence_size", type=int, default=100_000_000)
    p.add_argument("--user_defined_symbols", default="", help="comma-separated pieces kept whole (bpe)")
    p.add_argument("--non_linguistic_symbols", default=None, help="file, one symbol a line (char)")
    p.add_argument("--cutoff", type=int, default=0, help="char/word: keep tokens seen more than this often")
    p.add_argument("--no_ids", action="store_true", help="input lines have no utterance id")
    p.add_argument("--num_threads", type=int, default=1)
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    try:
        if args.token_type == "bpe":
            if args.vocab_size is None:
                sys.exit("train_bpe: --token_type bpe needs --vocab_size")
            symbols = [s for s in args.user_defined_symbols.split(",") if s]
            m = train_bpe(args.text, args.output_dir, args.vocab_size, args.model_type, args.character_coverage,
                          args.input_sentence_size, symbols, has_ids=not args.no_ids, num_threads=args.num_threads)
            print(f"wrote {m.model} and {m.token_list}")
        else:
            nlsyms = None
            if args.non_linguistic_symbols:
                with open(args.non_linguistic_symbols, encoding="utf-8") as f:
                    nlsyms = [line.strip() for line in f if line.strip()]
            out = f"{args.output_dir}/tokens.txt"
            tokens = make_token_list(args.text, out, args.token_type, has_ids=not args.no_ids,
                                     non_linguistic_symbols=nlsyms, cutoff=args.cutoff,
                                     vocab_size=args.max_tokens)
            print(f"wrote {out} ({len(tokens)} tokens)")
    except DataError as e:
        sys.exit(f"train_bpe: {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
