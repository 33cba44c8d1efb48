"""Lexicon CTC beam search with a word n-gram LM (torchaudio's `ctc_decoder`, flashlight-text + KenLM) over any ESPnet
CTC-capable model, with ctc_greedy_inference's inputs, batching, encoder and output layout.

    python -m espnet_bertkd.bin.ctc_lm_inference --asr_train_config exp/asr/config.yaml \
        --asr_model_file exp/asr/valid.cer_ctc.ave.pth --data_path_and_name_and_type data/test/wav.scp,speech,sound \
        --output_dir exp/asr/decode_beam_ngram/test --lm exp/ngram/lm.arpa --lexicon exp/ngram/lexicon.txt \
        [--lm_weight 1.0 --word_score 0.0 --beam_size 50 --beam_threshold 25] [--decode_config conf/decode_ngram.yaml]

Writes OUTPUT_DIR/1best_recog/{text,token,token_int,score} (the best word sequence, spelled in the model's tokens;
score: flashlight's total, CTC log-probability + lm_weight * log10 LM probability + word_score per word) and
OUTPUT_DIR/speed.json (the search's settings under "search"). `--lm none`: lexicon-constrained search without an
LM. Without `--lexicon` the words of the ARPA file's unigrams are spelled with the model's tokenizer.
Needs flashlight-text (`pip install flashlight-text`, in the `[lm]` extra).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, List, Optional

import yaml

from espnet_bertkd.asr.lexicon_ctc import LexiconCTCDecoder, arpa_vocabulary, spell, write_lexicon
from espnet_bertkd.bin import ctc_greedy_inference

SEARCH_OPTIONS = ("lm_weight", "word_score", "beam_size", "beam_size_token", "beam_threshold", "sil_score",
                  "unk_score")


def get_parser() -> argparse.ArgumentParser:
    p = ctc_greedy_inference.get_parser()
    p.description = __doc__
    p.add_argument("--lm", default=None, help="KenLM file (ARPA or binary) of words, or 'none' (lexicon only)")
    p.add_argument("--lm_train_config", default=None,
                   help="instead of --lm: an ESPnet token LM (e.g. the recipe's Transformer LM) scoring each word's "
                        "tokens through torchaudio's CTCDecoderLM (slow: one LM call per hypothesis and word)")
    p.add_argument("--lm_file", default=None, help="its model file")
    p.add_argument("--token_bonus", type=float, default=0.0,
                   help="with --lm_train_config: score per LM token (ESPnet's penalty / lm_weight)")
    p.add_argument("--lexicon", default=None,
                   help="WORD TOKEN... per line in the model's tokens (default: the ARPA unigrams, spelled with the "
                        "model's tokenizer)")
    p.add_argument("--decode_config", default=None,
                   help="YAML with any of " + ", ".join(SEARCH_OPTIONS) + " (command-line options override it)")
    p.add_argument("--lm_weight", type=float, default=None, help="weight of the LM's log10 probability (1.0)")
    p.add_argument("--word_score", type=float, default=None, help="score added per word (0.0)")
    p.add_argument("--beam_size", type=int, default=None, help="hypotheses kept per frame (50)")
    p.add_argument("--beam_size_token", type=int, default=None, help="tokens tried per frame (all)")
    p.add_argument("--beam_threshold", type=float, default=None, help="prune hypotheses this far below the best (25)")
    p.add_argument("--sil_score", type=float, default=None, help="score per silence frame (0.0)")
    p.add_argument("--unk_score", type=float, default=None, help="score of an out-of-lexicon word (-inf: never)")
    return p


DEFAULTS = dict(lm_weight=1.0, word_score=0.0, beam_size=50, beam_size_token=None, beam_threshold=25.0,
                sil_score=0.0, unk_score=float("-inf"))


def search_options(args: argparse.Namespace) -> dict:
    """DEFAULTS, then --decode_config, then explicit command-line values."""
    options = dict(DEFAULTS)
    if args.decode_config:
        try:
            with open(args.decode_config, encoding="utf-8") as f:
                conf = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"--decode_config {args.decode_config}: {e}") from e
        if not isinstance(conf, dict):
            raise ValueError(f"--decode_config {args.decode_config}: expected a mapping of {', '.join(SEARCH_OPTIONS)}")
        unknown = sorted(set(conf) - set(SEARCH_OPTIONS))
        if unknown:
            raise ValueError(f"{args.decode_config}: unknown keys {unknown}; known: {', '.join(SEARCH_OPTIONS)}")
        for key, value in conf.items():
            integer = key in ("beam_size", "beam_size_token")
            if not (value is None and key == "beam_size_token") and (
                isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
            ):
                raise ValueError(f"{args.decode_config}: {key} must be {'an integer' if integer else 'a number'}, "
                                 f"got {value!r}")
        options.update(conf)
    options.update({k: getattr(args, k) for k in SEARCH_OPTIONS if getattr(args, k) is not None})
    return options


def lexicon_decoder(args: argparse.Namespace, scratch: Path):
    """ctc_greedy_inference.run's `make_decoder`: the lexicon search on the greedy decoder's encoder."""

    def make(greedy, tokenizer: Any) -> LexiconCTCDecoder:
        if args.interctc_layers.strip():
            raise ValueError("--interctc_layers: only the final layer is decoded with the lexicon search")
        if (args.lm is None) == (args.lm_train_config is None):
            raise ValueError("give either --lm (KenLM file, or none) or --lm_train_config/--lm_file")
        if args.lexicon is not None and not Path(args.lexicon).is_file():
            raise ValueError(f"--lexicon {args.lexicon}: no such file")
        if args.lm_train_config is not None:
            return token_lm_decoder(args, greedy, scratch)
        lm = None if args.lm == "none" else args.lm
        if lm is not None and not Path(lm).is_file():
            raise ValueError(f"--lm {lm}: no such file")
        lexicon = args.lexicon
        if lexicon is None:
            if lm is None:
                raise ValueError("--lm none needs --lexicon")
            if tokenizer is None:
                raise ValueError("the model has no token_type to spell the LM's words with: pass --lexicon")
            spelled, _ = spell(arpa_vocabulary(lm), greedy.model.token_list, tokenizer)
            lexicon = scratch / "lexicon.txt"
            with open(lexicon, "w", encoding="utf-8") as f:
                write_lexicon(spelled, f)
        try:
            return LexiconCTCDecoder(greedy, lexicon, lm=lm, **search_options(args))
        except ImportError as e:
            raise ValueError(str(e)) from e

    return make


def token_lm_decoder(args: argparse.Namespace, greedy, scratch: Path) -> LexiconCTCDecoder:
    """The lexicon search with an ESPnet token LM scoring words (lexicon_ctc.token_lm_for_words)."""
    from espnet2.tasks.lm import LMTask

    from espnet_bertkd.asr.checkpoint import strict_model_loading
    from espnet_bertkd.asr.lexicon_ctc import read_lexicon, token_lm_for_words, write_word_dict

    if args.lexicon is None or args.lm_file is None:
        raise ValueError("--lm_train_config needs --lm_file and --lexicon")
    device = "cuda" if args.ngpu > 0 else "cpu"
    with strict_model_loading():
        lm, _ = LMTask.build_model_from_file(args.lm_train_config, args.lm_file, device)
    lm.eval()
    words = write_word_dict(args.lexicon, scratch / "words.txt")
    try:
        scorer = token_lm_for_words(lm, list(greedy.model.token_list), read_lexicon(args.lexicon), words,
                                    token_bonus=args.token_bonus, device=device)
        decoder = LexiconCTCDecoder(greedy, args.lexicon, lm=scorer, lm_dict=scratch / "words.txt",
                                    **search_options(args))
    except ImportError as e:
        raise ValueError(str(e)) from e
    decoder.search_params.update(lm=f"{args.lm_train_config} (token LM per word)", token_bonus=args.token_bonus)
    return decoder


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ctc_lm_inference.") as scratch:
        ctc_greedy_inference.run(args, prog="ctc_lm_inference", make_decoder=lexicon_decoder(args, Path(scratch)))


if __name__ == "__main__":
    main(sys.argv[1:])
