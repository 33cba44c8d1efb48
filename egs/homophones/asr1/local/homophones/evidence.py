"""The evidence of a multi-seed benchmark: WER per system, seed and test set, seed spread, paired tests and a
WER-vs-speed plot with the spread, written as one `summary.json` (what the recipe README's tables are made of).

Directory convention (what `asr.sh --expdir ROOT/seed<S>` writes, one directory per training seed):

    ROOT/seed<S>/<system>/decode_<decoding>/<test_set>/1best_recog/text   hypotheses (scored here, per utterance)
    ROOT/seed<S>/<system>/decode_<decoding>/<test_set>/speed.json          decoding speed (RTF)

Each system is named `<system>/<decoding>` (e.g. `ctc/greedy`, `ctc/beam_lm`). Every (system, seed, test set)
must have been decoded: a missing one is an error naming it, since a mean over fewer seeds would not be comparable.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from espnet_bertkd.recipe.decode_jobs import merge_speed
from espnet_bertkd.recipe.results import read_speed
from espnet_bertkd.recipe.score import UttScore, score_texts
from espnet_bertkd.recipe.significance import paired_bootstrap, seed_spread
from espnet_bertkd.utils.fileio import DataError, PathLike, atomic_open


@dataclass
class Decoded:
    """One system's decodings of one test set over the seeds, scored per utterance."""

    utts: List[List[UttScore]] = field(default_factory=list)  # [seed][utterance], in reference order
    speeds: List[Optional[Dict]] = field(default_factory=list)  # [seed] speed.json, None if not timed

    def wer(self) -> List[float]:
        return [100.0 * sum(u.errors for u in s) / sum(len(u.ref) for u in s) for s in self.utts]

    def cer(self) -> List[float]:
        return [100.0 * sum(u.char_errors for u in s) / max(1, sum(u.chars for u in s)) for s in self.utts]


def decode_dir(root: Path, seed: int, system: str, test_set: str) -> Path:
    name, _, decoding = system.partition("/")
    return root / f"seed{seed}" / name / f"decode_{decoding}" / test_set


def collect(root: PathLike, data_dir: PathLike, seeds: Sequence[int], systems: Sequence[str],
            test_sets: Sequence[str]) -> Dict[str, Dict[str, Decoded]]:
    """system -> test set -> Decoded, every (system, seed, test set) scored against data_dir/<test_set>/text."""
    root, data_dir = Path(root), Path(data_dir)
    for system in systems:
        if system.count("/") != 1:
            raise DataError(f"system {system!r}: expected <system>/<decoding>, e.g. ctc/greedy")
    missing = [str(decode_dir(root, s, sy, t) / "1best_recog" / "text") for sy in systems for t in test_sets
               for s in seeds if not (decode_dir(root, s, sy, t) / "1best_recog" / "text").is_file()]
    if missing:
        raise DataError([f"{m}: no such file (not decoded)" for m in missing],
                        hint="every system must be decoded for every seed and test set")
    out: Dict[str, Dict[str, Decoded]] = {}
    for system in systems:
        for test_set in test_sets:
            d = out.setdefault(system, {}).setdefault(test_set, Decoded())
            for seed in seeds:
                where = decode_dir(root, seed, system, test_set)
                _, utts = score_texts(data_dir / test_set / "text", where / "1best_recog" / "text")
                d.utts.append(utts)
                d.speeds.append(read_speed(where))
    return out


def compare(a: Decoded, b: Decoded, samples: int = 10000) -> Dict[str, object]:
    """Paired bootstrap of A against B pooled over seeds, and per seed."""
    words = [len(u.ref) for u in a.utts[0]]
    if [len(u.ref) for u in b.utts[0]] != words:
        raise DataError("the two systems were scored on different references")
    errors_a = [[u.errors for u in s] for s in a.utts]
    errors_b = [[u.errors for u in s] for s in b.utts]
    pooled = paired_bootstrap(errors_a, errors_b, words, samples=samples).to_dict()
    pooled["per_seed"] = [
        {k: v for k, v in paired_bootstrap(ea, eb, words, samples=samples).to_dict().items()
         if k in ("delta", "p")} for ea, eb in zip(errors_a, errors_b)
    ]
    return pooled


def summarise(results: Mapping[str, Mapping[str, Decoded]], seeds: Sequence[int],
              comparisons: Sequence[Tuple[str, str]], samples: int = 10000) -> Dict[str, object]:
    """The summary.json content: per system and test set the per-seed WER and CER with mean and std, the RTF
    per seed, and for each (A, B) of `comparisons` the paired test per test set ("A-vs-B", short system names
    when the decoding is greedy)."""
    systems: Dict[str, Dict[str, object]] = {}
    for system, by_set in results.items():
        entry: Dict[str, object] = {}
        for test_set, d in by_set.items():
            entry[test_set] = d.wer()
            entry[f"{test_set}_cer"] = d.cer()
            entry[f"{test_set}_mean_std"] = seed_spread(d.wer())
        entry["rtf"] = _rtf_per_seed(by_set)
        rtfs = [r for r in entry["rtf"] if r is not None]
        entry["rtf_mean_std"] = seed_spread(rtfs) if rtfs else None
        systems[system] = entry
    tests: Dict[str, Dict[str, object]] = {}
    for a, b in comparisons:
        for name in (a, b):
            if name not in results:
                raise DataError(f"comparison {a} vs {b}: {name} was not collected")
        tests[f"{_short(a)}-vs-{_short(b)}"] = {
            t: compare(results[a][t], results[b][t], samples) for t in results[a] if t in results[b]
        }
    return {"seeds": list(seeds), "systems": systems, "tests": tests,
            "test": "paired bootstrap over test utterances, seeds averaged per utterance "
                    f"({samples} samples, two-sided; espnet_bertkd.recipe.significance); a claim needs p < 0.05 and "
                    "the same sign in every seed"}


def _rtf_per_seed(by_set: Mapping[str, Decoded]) -> List[Optional[float]]:
    """RTF per seed over all the system's test sets: total compute seconds / total audio seconds (None where a
    decoding was not timed)."""
    per_seed: List[Optional[float]] = []
    for i in range(len(next(iter(by_set.values())).speeds)):
        records = [d.speeds[i] for d in by_set.values()]
        per_seed.append(None if None in records else merge_speed(records)["rtf"])
    return per_seed


def _short(system: str) -> str:
    name, _, decoding = system.partition("/")
    return name if decoding == "greedy" else system.replace("/", "+")


def write_summary(summary: Mapping[str, object], path: PathLike) -> Path:
    with atomic_open(path) as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return Path(path)


def plot_wer_vs_rtf(summary: Mapping[str, object], test_set: str, path: PathLike) -> Path:
    """Mean WER against mean RTF per system, with bars of +-1 standard deviation over seeds on both axes and each
    seed as a faint dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colours = plt.get_cmap("tab10")
    for i, (system, entry) in enumerate(summary["systems"].items()):
        wers, rtfs = entry[test_set], entry["rtf"]
        points = [(r, w) for r, w in zip(rtfs, wers) if r is not None]
        if not points:
            continue
        colour = colours(i % 10)
        ax.scatter([p[0] for p in points], [p[1] for p in points], color=colour, alpha=0.35, s=18)
        mean_r = sum(p[0] for p in points) / len(points)
        mean_w = sum(p[1] for p in points) / len(points)
        spread_w = entry[f"{test_set}_mean_std"]["std"] or 0.0
        spread_r = (entry["rtf_mean_std"] or {}).get("std") or 0.0
        ax.errorbar([mean_r], [mean_w], xerr=[spread_r], yerr=[spread_w], color=colour, marker="o", capsize=4,
                    label=f"{system}: {mean_w:.1f} +- {spread_w:.1f}")
    ax.set_xscale("log")
    ax.set_xlabel("real-time factor (decoding compute s / audio s, log scale)")
    ax.set_ylabel(f"{test_set} WER (%)")
    ax.set_title(f"WER vs decoding speed, mean +- std over seeds {summary['seeds']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def fmt_mean_std(values: Sequence[float]) -> str:
    s = seed_spread(values)
    return f"{s['mean']:.2f}" + ("" if s["std"] is None or math.isnan(s["std"]) else f" +- {s['std']:.2f}")


def word_errors(results: Mapping[str, Mapping[str, Decoded]], groups: Sequence[Sequence[str]],
                lm_only: Sequence[str]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Per system and test set: homophones correct / confused within their group, LM-only and other words
    correct (%), pooled over seeds (homophones.errors)."""
    from homophones.errors import HomophoneCounts, count_homophone_errors

    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for system, by_set in results.items():
        for test_set, d in by_set.items():
            total = HomophoneCounts()
            for utts in d.utts:
                total = total.add(count_homophone_errors(utts, groups, lm_only))
            out.setdefault(system, {})[test_set] = {
                **total.percentages(), "homophones": total.homophones, "lm_only": total.lm_only,
                "others": total.others, "seeds": len(d.utts),
            }
    return out


def verdict(test: Mapping[str, object], alpha: float = 0.05) -> str:
    """'holds' / 'reversed' or 'not shown' for "A has a lower WER than B", from one stored paired test: significant
    at `alpha` over the test utterances, and the same sign in every seed (the bootstrap averages the seeds, so
    training noise is checked here)."""
    seed_deltas = [s["delta"] for s in test.get("per_seed", [])]
    if test["p"] < alpha and test["delta"] != 0:
        sign = -1 if test["delta"] < 0 else 1
        if all(d * sign > 0 for d in seed_deltas):
            return "holds" if sign < 0 else "reversed"
    return "not shown"


def claim(summary: Mapping[str, object], better: str, worse: str, test_set: str, alpha: float = 0.05) -> str:
    """verdict() of "better has a lower WER than worse" on test_set."""
    return verdict(summary["tests"][f"{_short(better)}-vs-{_short(worse)}"][test_set], alpha)


def render_markdown(summary: Mapping[str, object], test_sets: Sequence[str], plot_name: Optional[str]) -> str:
    """The tables of RESULTS.md: WER mean +- std per system, per seed, the paired tests, word errors and the
    paired-data sizes, each generated from `summary` alone."""
    seeds = summary["seeds"]
    lines = ["# Evidence: every system over training seeds", "",
             f"- command: `{summary.get('command', '')}`", f"- commit: {summary.get('commit', '')}",
             f"- seeds: {seeds}; wall time: {summary.get('wall_seconds', '-')} s, of which "
             f"{summary.get('default_run_seconds', '-')} s in the default run (seed 0 and the shared set-up)",
             f"- test: {summary['test']}", "",
             "## WER (%), mean +- standard deviation over seeds", "",
             "| system / decoding | " + " | ".join(test_sets) + " | " + " | ".join(f"{t} CER" for t in test_sets)
             + " | RTF |", "|---|" + "---:|" * (2 * len(test_sets) + 1)]
    for system, entry in summary["systems"].items():
        rtf = entry.get("rtf_mean_std")
        lines.append(f"| {system} | " + " | ".join(fmt_mean_std(entry[t]) for t in test_sets) + " | "
                     + " | ".join(fmt_mean_std(entry[f"{t}_cer"]) for t in test_sets) + " | "
                     + (f"{rtf['mean']:.4f}" if rtf else "-") + " |")
    if plot_name:
        lines += ["", f"![WER vs real-time factor, seed spread]({plot_name})"]
    lines += ["", "## WER (%) per seed", "", "| system / decoding | set | " + " | ".join(f"seed {s}" for s in seeds)
              + " |", "|---|---|" + "---:|" * len(seeds)]
    for system, entry in summary["systems"].items():
        for t in test_sets:
            lines.append(f"| {system} | {t} | " + " | ".join(f"{w:.2f}" for w in entry[t]) + " |")
    lines += ["", "## Paired tests (A - B in WER points; negative: A better)", "",
              "| A vs B | set | delta | 95 % interval | p | delta per seed | A better (p < 0.05, every seed) |",
              "|---|---|---:|---:|---:|---|---|"]
    for name, by_set in summary["tests"].items():
        for t, r in by_set.items():
            per_seed = ", ".join(f"{s['delta']:+.2f} (p {s['p']:.3f})" for s in r["per_seed"])
            lines.append(f"| {name} | {t} | {r['delta']:+.2f} | [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}] | "
                         f"{r['p']:.4f} | {per_seed} | {verdict(r)} |")
    errors = summary.get("word_errors")
    if errors:
        lines += ["", "## Where the errors are (pooled over seeds)", "",
                  "| system / decoding | set | homophones correct (%) | confused within group (%) | LM-only words "
                  "correct (%) | other words correct (%) |", "|---|---|---:|---:|---:|---:|"]
        for system, by_set in errors.items():
            for t, e in by_set.items():
                lines.append(f"| {system} | {t} | {e['homophones_correct']:.1f} | {e['homophones_confused']:.1f} "
                             f"| {e['lm_only_correct']:.1f} | {e['others_correct']:.1f} |")
    sizes = summary.get("data_size")
    if sizes:
        lines += ["", "## KD gain as paired data shrinks (inter_aed_kd - aed, WER points)", "",
                  "| paired data | utterances | seeds | set | aed | inter_aed_kd | gain | p |",
                  "|---|---:|---|---|---:|---:|---:|---:|"]
        for fraction, entry in sizes.items():
            seeds_here = " ".join(str(s) for s in entry["seeds"])
            for t, g in entry["gain"].items():
                lines.append(f"| {fraction} | {entry['utterances']} | {seeds_here} | {t} | "
                             f"{fmt_mean_std(entry['aed'][t])} | "
                             f"{fmt_mean_std(entry['inter_aed_kd'][t])} | {g['delta']:+.2f} | {g['p']:.4f} |")
    return "\n".join(lines) + "\n"


def plot_data_size(summary: Mapping[str, object], test_set: str, path: PathLike) -> Path:
    """The KD gain (inter_aed_kd - aed) against the number of paired utterances, with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = sorted(summary["data_size"].values(), key=lambda e: e["utterances"])
    x = [e["utterances"] for e in entries]
    gain = [e["gain"][test_set] for e in entries]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(x, [g["delta"] for g in gain], yerr=[[g["delta"] - g["ci_low"] for g in gain],
                                                      [g["ci_high"] - g["delta"] for g in gain]],
                marker="o", capsize=4)
    ax.axhline(0.0, color="grey", linewidth=1)
    ax.set_xscale("log")
    ax.set_xticks(x, [str(v) for v in x])
    ax.set_xlabel("paired training utterances (log scale)")
    ax.set_ylabel(f"{test_set}: WER(inter_aed_kd) - WER(aed), points")
    ax.set_title("Teacher's contribution vs paired data (95 % bootstrap interval)")
    ax.grid(True, alpha=0.3)
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
