"""Lexicon-constrained CTC beam search with a word n-gram LM (KenLM), over any ESPnet ASR model's CTC head: torchaudio's
`ctc_decoder` (flashlight-text's C++ `LexiconDecoder`, the decoder wav2letter/fairseq/torchaudio users pick instead
of ESPnet's Python beam search).

The encoder is the greedy decoder's batched, padding-exact one (`GreedyCTCDecoder.encode`); only the search differs.
flashlight-text (PyPI `flashlight-text`, whose wheels bundle KenLM) is imported when a decoder is built, so the plugin
imports without it.

Tokens are the model's `token_list`; the lexicon spells each word in them:
- character models (a `<space>` token): `WORD  W O R D <space>`, with `<space>` as flashlight's silence token. A word
  is complete when its `<space>` is read, so a word's last character may span several frames; the utterance's last
  word reads a `<space>` from one extra frame appended to the emissions (log-probability 0 for `<space>`, -inf for the
  rest), which adds nothing to any hypothesis' score.
- BPE models (pieces with U+2581 word marks): the word's pieces, as the model's sentencepiece model splits it, with
  the blank as the silence token (there is no separator token). flashlight emits the word on its last piece's first
  frame, so further frames of that piece are scored as blank/silence: a small bias against words whose last piece
  spans several frames (the usual flashlight set-up for BPE; the embedded recipe uses characters).

Scores: flashlight's, i.e. CTC log-probability (natural log) + lm_weight * KenLM log10 probability + word_score per
word (+ sil_score per silence frame).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

from espnet_bertkd.asr.greedy_ctc import GreedyCTCDecoder, GreedyResult

SPACE = "<space>"
BLANK = "<blank>"
UNK_WORD = "<unk>"
NOT_INSTALLED = (
    "lexicon CTC decoding needs the flashlight-text package (torchaudio's ctc_decoder runs its C++ beam search; its "
    "wheels include KenLM): pip install flashlight-text (or pip install 'espnet-bertkd[lm]', which tools/install.sh "
    "installs)"
)


def require_flashlight() -> None:
    """Raise ImportError naming the package when flashlight-text (with KenLM) is missing."""
    try:
        import flashlight.lib.text.decoder  # noqa: F401
        from flashlight.lib.text.decoder.kenlm import KenLM  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{NOT_INSTALLED} ({e})") from e


def is_char_tokens(token_list: Sequence[str]) -> bool:
    return SPACE in token_list


def silence_token(token_list: Sequence[str]) -> str:
    return SPACE if is_char_tokens(token_list) else BLANK


def spell(words: Iterable[str], token_list: Sequence[str], tokenizer: Any) -> Tuple[Dict[str, List[str]], List[str]]:
    """Each word's spelling in the model's tokens (ESPnet's tokenizer: characters, or BPE pieces), `<space>`-terminated
    for character models; words the token list cannot spell (a character it lacks, or a piece that is `<unk>`) are
    returned apart."""
    known = set(token_list)
    char = is_char_tokens(token_list)
    lexicon: Dict[str, List[str]] = {}
    unspellable: List[str] = []
    for word in words:
        if word in (UNK_WORD, "<s>", "</s>") or not word:
            continue
        tokens = list(tokenizer.text2tokens(word))
        if char:
            tokens.append(SPACE)
        if not tokens or any(t not in known or t in (BLANK, "<unk>") for t in tokens):
            unspellable.append(word)
            continue
        lexicon[word] = tokens
    return lexicon, unspellable


def write_lexicon(lexicon: Dict[str, List[str]], handle) -> None:
    """flashlight's lexicon format: `WORD<TAB>t1 t2 ...`, one line per word."""
    for word in sorted(lexicon):
        handle.write(f"{word}\t{' '.join(lexicon[word])}\n")


def read_lexicon(path: Union[str, Path]) -> Dict[str, List[str]]:
    """A lexicon file (the first spelling of each word)."""
    lexicon: Dict[str, List[str]] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise ValueError(f"{path}:{number}: a lexicon line is 'WORD TOKEN...', got {line.strip()!r}")
            lexicon.setdefault(fields[0], fields[1:])
    return lexicon


def arpa_vocabulary(path: Union[str, Path]) -> List[str]:
    """The words of an ARPA file's unigram section (a binary KenLM file cannot be read: pass a lexicon)."""
    words: List[str] = []
    section = False
    try:
        with open(path, encoding="utf-8", errors="strict") as f:
            for line in f:
                line = line.strip()
                if line == "\\1-grams:":
                    section = True
                elif section and line.startswith("\\"):
                    break
                elif section and line:
                    fields = line.split()
                    words.append(fields[1])
    except UnicodeDecodeError:
        words = []
    if not words:
        raise ValueError(f"{path}: no unigram section; is it an ARPA file? (binary KenLM files need --lexicon)")
    return words


class LexiconCTCDecoder:
    """Batched encoder (the greedy decoder's) + flashlight's lexicon beam search with an optional KenLM n-gram.

    `lexicon_path`: a lexicon file (`write_lexicon`), spelled in the model's tokens; `lm`: a KenLM file (ARPA or
    binary) path, a torchaudio `CTCDecoderLM`, or None (lexicon-constrained search without a language model).
    Returns GreedyResult objects (token ids of the best word sequence's spelling, its flashlight score), so the
    greedy decoder's writers serve it too."""

    def __init__(
        self,
        encoder: GreedyCTCDecoder,
        lexicon_path: Union[str, Path],
        lm: Optional[Union[str, Path, Any]] = None,
        lm_weight: float = 1.0,
        word_score: float = 0.0,
        lm_dict: Optional[Union[str, Path]] = None,
        beam_size: int = 50,
        beam_size_token: Optional[int] = None,
        beam_threshold: float = 25.0,
        sil_score: float = 0.0,
        unk_score: float = float("-inf"),
    ) -> None:
        require_flashlight()
        from torchaudio.models.decoder import ctc_decoder

        self.encoder = encoder
        self.model = encoder.model
        token_list = list(self.model.token_list)
        self.token_list = token_list
        self.char = is_char_tokens(token_list)
        self.sil = silence_token(token_list)
        self.sil_id = token_list.index(self.sil)
        if BLANK not in token_list or token_list.index(BLANK) != self.model.blank_id:
            raise ValueError(f"the model's blank (id {self.model.blank_id}) is not {BLANK!r}")
        lexicon = read_lexicon(lexicon_path)
        missing = sorted({t for spelling in lexicon.values() for t in spelling} - set(token_list))
        if missing:
            raise ValueError(f"the lexicon spells words with tokens the model lacks: {missing[:5]}")
        unterminated = [w for w, spelling in lexicon.items() if self.char and spelling[-1:] != [SPACE]]
        if unterminated:
            raise ValueError(
                f"{lexicon_path}: a character model's lexicon must end every spelling with {SPACE} (the word "
                f"separator flashlight reads as silence); {len(unterminated)} words do not, e.g. {unterminated[:5]}: "
                "write it with `python -m espnet_bertkd.recipe.bin.train_ngram`"
            )
        self.lexicon = lexicon
        self.index = {t: i for i, t in enumerate(token_list)}
        self.search_params = dict(
            lm=str(lm) if isinstance(lm, (str, Path)) else type(lm).__name__ if lm else None,
            lm_weight=lm_weight, word_score=word_score, beam_size=beam_size, beam_size_token=beam_size_token,
            beam_threshold=beam_threshold, sil_score=sil_score, lexicon=str(lexicon_path), words=len(lexicon),
        )
        self.search = ctc_decoder(
            lexicon=str(lexicon_path), tokens=token_list, lm=str(lm) if isinstance(lm, Path) else lm,
            nbest=1, beam_size=beam_size, beam_size_token=beam_size_token, beam_threshold=beam_threshold,
            lm_weight=lm_weight, word_score=word_score, sil_score=sil_score, unk_score=unk_score,
            lm_dict=None if lm_dict is None else str(lm_dict),
            blank_token=BLANK, sil_token=self.sil, unk_word=UNK_WORD,
        )

    @property
    def inference_params(self) -> int:
        return self.encoder.inference_params

    def emissions(self, speech: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """CTC log-posteriors (B, T, V) as float32 on the CPU and their lengths; for character models with one
        extra frame per utterance that reads only `<space>` (the last word's terminator)."""
        encoder_out, out_lengths, _ = self.encoder.encode(speech, lengths)
        logp = self.model.ctc.log_softmax(encoder_out).float().cpu()
        out_lengths = out_lengths.cpu().to(torch.int32)
        if self.char:
            logp = torch.cat([logp, torch.full_like(logp[:, :1], float("-inf"))], dim=1)
            logp[torch.arange(logp.size(0)), out_lengths.long(), :] = float("-inf")
            logp[torch.arange(logp.size(0)), out_lengths.long(), self.sil_id] = 0.0
            out_lengths = out_lengths + 1
        return logp.contiguous(), out_lengths

    def spelling(self, words: Sequence[str]) -> List[int]:
        """Token ids of a word sequence as the model writes it (character models: `<space>` between words)."""
        tokens: List[str] = []
        for word in words:
            tokens += self.lexicon[word]
        if self.char and tokens and tokens[-1] == SPACE:
            tokens = tokens[:-1]
        return [self.index[t] for t in tokens]

    @torch.no_grad()
    def __call__(self, speech: torch.Tensor, lengths: torch.Tensor) -> List[GreedyResult]:
        logp, out_lengths = self.emissions(speech, lengths)
        results = []
        for hyps in self.search(logp, out_lengths):
            if not hyps:  # every hypothesis pruned (e.g. audio the lexicon cannot spell at all)
                logging.warning("lexicon CTC search found no hypothesis for an utterance; writing an empty one")
                results.append(GreedyResult([], float("-inf"), {}))
                continue
            best = hyps[0]
            words = [w for w in best.words if w != UNK_WORD]
            results.append(GreedyResult(self.spelling(words), float(best.score), {}))
        return results


def write_word_dict(lexicon_path: Union[str, Path], path: Union[str, Path]) -> List[str]:
    """The search's word dictionary as a file flashlight reads (one word a line, its line number its index: the
    lexicon's words sorted, then `<unk>`), so a Python LM knows which word an index is; returns the words."""
    words = sorted(read_lexicon(lexicon_path)) + [UNK_WORD]
    Path(path).write_text("".join(f"{w}\n" for w in words), encoding="utf-8")
    return words


def token_lm_for_words(lm: torch.nn.Module, token_list: Sequence[str], lexicon: Dict[str, List[str]],
                       words: Sequence[str], token_bonus: float = 0.0, device: str = "cpu"):
    """A torchaudio `CTCDecoderLM` that scores the lexicon search's words with an ESPnet token-level LM (e.g. the
    recipe's Transformer LM over the ASR model's characters): a word's score is the sum of its tokens' LM
    log-probabilities (natural log, as ESPnet's shallow fusion weighs them), `<space>` before every word but the first
    for character models, and `<sos/eos>` at the end, plus `token_bonus` per token (ESPnet's `penalty`, i.e. insertion
    bonus, divided by the lm_weight: a token LM alone makes long words expensive). With lm_weight 1 and token_bonus
    1.5 the words are scored as conf/decode_sf.yaml scores tokens. Each new (history, word) runs the LM one token at a
    time with its cache; flashlight calls it once per hypothesis and word (no batching), so it is slow: see
    benchmarks/decoding.py.

    `lm`: ESPnet's `ESPnetLanguageModel` (its `.lm` scorer with `score(y, state, x)`); `words`: the word dictionary
    (write_word_dict) by index."""
    from torchaudio.models.decoder import CTCDecoderLM, CTCDecoderLMState

    scorer = getattr(lm, "lm", lm)
    char = is_char_tokens(token_list)
    index = {t: i for i, t in enumerate(token_list)}
    sos = eos = len(token_list) - 1
    space = index.get(SPACE)
    spelled = {i: [index[t] for t in (lexicon[w][:-1] if char else lexicon[w])]
               for i, w in enumerate(words) if w in lexicon}

    class ESPnetWordLM(CTCDecoderLM):
        def __init__(self) -> None:
            CTCDecoderLM.__init__(self)
            self.entries: Dict[Any, Tuple[List[int], Any, torch.Tensor]] = {}  # state -> (tokens, cache, next logp)
            self.scores: Dict[Any, float] = {}  # state -> the LM score of its last word
            self.calls = 0

        @torch.no_grad()
        def _advance(self, entry, tokens: List[int]) -> Tuple[float, Tuple[List[int], Any, torch.Tensor]]:
            ys, cache, logp = entry
            total = 0.0
            for t in tokens:
                total += float(logp[t]) + token_bonus
                ys = ys + [t]
                logp, cache = scorer.score(torch.tensor(ys, device=device), cache, None)
                self.calls += 1
            return total, (ys, cache, logp)

        def start(self, start_with_nothing: bool = False):
            """Called once per utterance: the previous utterance's states (and their LM caches) are dropped."""
            self.entries.clear()
            self.scores.clear()
            state = CTCDecoderLMState()
            with torch.no_grad():
                logp, cache = scorer.score(torch.tensor([sos], device=device), None, None)
            self.entries[state] = ([sos], cache, logp)
            return state

        def score(self, state, usr_token_idx: int):
            child = state.child(usr_token_idx)
            if child not in self.entries:
                tokens = spelled.get(usr_token_idx)
                if tokens is None:  # <unk>: never emitted with unk_score -inf
                    return child, -99.0
                entry = self.entries[state]
                if char and len(entry[0]) > 1:
                    tokens = [space] + tokens
                score, new = self._advance(entry, tokens)
                self.entries[child] = new
                self.scores[child] = score
            return child, self.scores[child]

        def finish(self, state):
            entry = self.entries[state]
            return state.child(-1), float(entry[2][eos])

    return ESPnetWordLM()
