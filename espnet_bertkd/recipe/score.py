"""Word error rate of a decoding against a reference, with jiwer, in place of asr.sh's sclite scoring.

Inputs are Kaldi `text` files (`<utt> <words...>`): the data directory's `text` and the decoder's
`1best_recog/text` (an utterance decoded to nothing is a line with the id alone). Words are whitespace-separated
tokens compared as they are (no normalisation beyond optional case folding): the recipe's references and
hypotheses are produced by the same text pipeline. Outputs: `result.json` (counts and rates, percent) and
`result.txt` (a sclite-like summary plus the alignment of every utterance with an error).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_bertkd.asr.speed import decoding_finished
from espnet_bertkd.utils.fileio import DataError, PathLike, atomic_open, location, read_table


@dataclass
class UttScore:
    utt_id: str
    ref: List[str]
    hyp: List[str]
    hits: int
    substitutions: int
    deletions: int
    insertions: int
    alignment: List[Tuple[str, str, str]]  # (ref word or "", hyp word or "", op in C/S/D/I)

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def chars(self) -> int:
        """Reference characters without spaces (ESPnet's CER counts them so)."""
        return sum(len(w) for w in self.ref)

    @property
    def char_errors(self) -> int:
        """Character edit distance with spaces removed, as ESPnet's `cer`/`cer_ctc` reports."""
        import editdistance

        return int(editdistance.eval("".join(self.hyp), "".join(self.ref)))


@dataclass
class ScoreResult:
    """Totals over the test set; `wer`, `ser`, `corr` are percentages of reference words / sentences."""

    ref: str
    hyp: str
    sentences: int
    words: int  # reference words
    hyp_words: int
    hits: int
    substitutions: int
    deletions: int
    insertions: int
    sentence_errors: int
    chars: int = 0  # reference characters, spaces excluded
    char_errors: int = 0
    missing: List[str] = field(default_factory=list)  # utterances without hypothesis (scored as deletions)

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        return 100.0 * self.errors / self.words

    @property
    def ser(self) -> float:
        return 100.0 * self.sentence_errors / self.sentences

    @property
    def cer(self) -> float:
        """Character error rate (%), spaces excluded (ESPnet's definition)."""
        return 100.0 * self.char_errors / self.chars if self.chars else float("nan")

    @property
    def corr(self) -> float:
        return 100.0 * self.hits / self.words

    def to_dict(self) -> Dict:
        d = asdict(self)
        d.update(errors=self.errors, wer=self.wer, ser=self.ser, corr=self.corr, cer=self.cer)
        return d


def _align(ref: List[str], hyp: List[str]) -> UttScore:
    import jiwer

    if not ref:  # by hand: jiwer 3 (setup.py allows it) refuses an empty reference; jiwer 4 gives the same
        return UttScore("", ref, hyp, 0, 0, 0, len(hyp), [("", h, "I") for h in hyp])
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    alignment: List[Tuple[str, str, str]] = []
    for chunk in out.alignments[0]:
        r = ref[chunk.ref_start_idx: chunk.ref_end_idx]
        h = hyp[chunk.hyp_start_idx: chunk.hyp_end_idx]
        if chunk.type == "equal":
            alignment += [(a, b, "C") for a, b in zip(r, h)]
        elif chunk.type == "substitute":
            alignment += [(a, b, "S") for a, b in zip(r, h)]
        elif chunk.type == "delete":
            alignment += [(a, "", "D") for a in r]
        else:
            alignment += [("", b, "I") for b in h]
    return UttScore("", ref, hyp, out.hits, out.substitutions, out.deletions, out.insertions, alignment)


def score_texts(ref_path: PathLike, hyp_path: PathLike, allow_missing: bool = False,
                ignore_case: bool = False) -> Tuple[ScoreResult, List[UttScore]]:
    """Score every reference utterance. A reference utterance absent from the hypothesis is an error naming it,
    unless `allow_missing` (then all its words are deletions); a hypothesis utterance absent from the reference is
    always an error (the wrong reference, or a decode of another set)."""
    refs = read_table(ref_path)
    hyps = read_table(hyp_path)
    if not refs:
        raise DataError(f"{ref_path}: no utterances")
    hyp_by_key = {e.key: e for e in hyps}
    ref_keys = {e.key for e in refs}
    problems = [f"{location(hyp_path, e.line, e.key)}: not in the reference {ref_path}"
                for e in hyps if e.key not in ref_keys]
    missing = [e for e in refs if e.key not in hyp_by_key]
    if missing and not allow_missing:
        problems += [f"{location(ref_path, e.line, e.key)}: no hypothesis in {hyp_path} (--allow_missing scores it "
                     "as deletions)" for e in missing]
    if problems:
        raise DataError(problems)

    def words(text: str) -> List[str]:
        return (text.lower() if ignore_case else text).split()

    utts: List[UttScore] = []
    for e in refs:
        hyp = hyp_by_key.get(e.key)
        u = _align(words(e.value), words(hyp.value) if hyp else [])
        u.utt_id = e.key
        utts.append(u)
    result = ScoreResult(
        ref=str(ref_path), hyp=str(hyp_path), sentences=len(utts), words=sum(len(u.ref) for u in utts),
        hyp_words=sum(len(u.hyp) for u in utts), hits=sum(u.hits for u in utts),
        substitutions=sum(u.substitutions for u in utts), deletions=sum(u.deletions for u in utts),
        insertions=sum(u.insertions for u in utts), sentence_errors=sum(1 for u in utts if u.errors),
        chars=sum(u.chars for u in utts), char_errors=sum(u.char_errors for u in utts),
        missing=[e.key for e in missing])
    if result.words == 0:
        raise DataError(f"{ref_path}: the reference has no words; WER is undefined")
    return result, utts


def summary_table(result: ScoreResult, title: str) -> str:
    """A sclite `Sum/Avg` box and ESPnet's RESULTS.md row for the same numbers."""
    w = result.words
    pct = [100.0 * x / w for x in (result.hits, result.substitutions, result.deletions, result.insertions,
                                   result.errors)] + [result.ser]
    row = f"| Sum/Avg | {result.sentences:6d} {result.words:7d} | " + " ".join(f"{p:6.1f}" for p in pct) + " |"
    width = len(row)
    names = ("Corr", "Sub", "Del", "Ins", "Err", "S.Err")
    head = f"| SPKR    | {'# Snt':>6} {'# Wrd':>7} | " + " ".join(f"{h:>6}" for h in names) + " |"
    lines = [
        "," + "-" * (width - 2) + ".",
        "|" + title[: width - 2].center(width - 2) + "|",
        "|" + "-" * (width - 2) + "|",
        head,
        "|" + "-" * (width - 2) + "|",
        row,
        "`" + "-" * (width - 2) + "'",
        "",
        "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|",
        "|---|---|---|---|---|---|---|---|---|",
        f"|{title}|{result.sentences}|{result.words}|" + "|".join(f"{p:.1f}" for p in pct) + "|",
    ]
    return "\n".join(lines) + "\n"


def alignment_text(u: UttScore) -> str:
    """sclite's `pra` block: REF/HYP columns, `***` for the missing side, and an Eval line of S/D/I."""
    cols = [(r or "*" * max(3, len(h)), h or "*" * max(3, len(r)), "" if op == "C" else op)
            for r, h, op in u.alignment]
    widths = [max(len(r), len(h)) for r, h, _ in cols]
    ref = " ".join(r.ljust(n) for (r, _, _), n in zip(cols, widths))
    hyp = " ".join(h.ljust(n) for (_, h, _), n in zip(cols, widths))
    ev = " ".join(o.ljust(n) for (_, _, o), n in zip(cols, widths))
    return (f"id: ({u.utt_id})\nScores: (#C #S #D #I) {u.hits} {u.substitutions} {u.deletions} {u.insertions}\n"
            f"REF:  {ref.rstrip()}\nHYP:  {hyp.rstrip()}\nEval: {ev.rstrip()}\n")


def write_results(result: ScoreResult, utts: Sequence[UttScore], output_dir: PathLike,
                  title: Optional[str] = None) -> Tuple[Path, Path]:
    """Write OUTPUT_DIR/result.json and OUTPUT_DIR/result.txt, each atomically."""
    out = Path(output_dir)
    title = title or out.name
    with atomic_open(out / "result.json") as f:
        json.dump(result.to_dict(), f, indent=2)
        f.write("\n")
    with atomic_open(out / "result.txt") as f:
        f.write(f"REF: {result.ref}\nHYP: {result.hyp}\n\n")
        f.write(summary_table(result, title))
        if result.missing:
            f.write(f"\n{len(result.missing)} utterance(s) without hypothesis (scored as deletions): "
                    + " ".join(result.missing) + "\n")
        errors = [u for u in utts if u.errors]
        f.write(f"\n{len(errors)} of {len(utts)} utterances with errors:\n\n")
        for u in errors:
            f.write(alignment_text(u) + "\n")
    return out / "result.json", out / "result.txt"


def score_decode_dir(decode_dir: PathLike, ref: PathLike, hyp: Optional[PathLike] = None,
                     allow_missing: bool = False, ignore_case: bool = False) -> ScoreResult:
    """Score DECODE_DIR/1best_recog/text (or `hyp`) against `ref`; write result.{json,txt} into DECODE_DIR."""
    decode_dir = Path(decode_dir)
    if hyp is None and not decoding_finished(decode_dir):
        raise DataError(f"{decode_dir}: no speed.json, so its decoding did not finish (killed, failed or still "
                        "running): its 1best_recog/text may be an older run's or incomplete; re-run the decoding")
    hyp = Path(hyp) if hyp is not None else decode_dir / "1best_recog" / "text"
    result, utts = score_texts(ref, hyp, allow_missing=allow_missing, ignore_case=ignore_case)
    write_results(result, utts, decode_dir)
    return result
