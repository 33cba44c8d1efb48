"""Collect scored decodings into RESULTS.md and a WER-vs-speed plot.

Directory convention (what the recipe writes; nothing else is read):

    <exp_dir>/<system>/params.json                              {"params": N}  (optional)
    <exp_dir>/<system>/decode_<decoding>/params.json            {"params": N}  (optional, wins: e.g. ASR + LM)
    <exp_dir>/<system>/decode_<decoding>/<test_set>/result.json  from espnet_bertkd.recipe.bin.score
    <exp_dir>/<system>/decode_<decoding>/<test_set>/speed.json   from the decoder: rtf, utterances_per_second,
                                                                 audio_seconds, compute_seconds (optional;
                                                                 its inference_params is the last resort for
                                                                 the parameter count)

A decode split into jobs has one merged speed.json (espnet_bertkd.recipe.bin.merge_decode). One row per `<system> / <decoding>`, one WER column per test set; the speed
columns are totals over the row's test sets (RTF = compute seconds / audio seconds, utt/s = utterances / compute
seconds), so every row's speed is measured on the same audio when the test sets are the same.
"""
from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_bertkd.recipe.decode_jobs import merge_speed
from espnet_bertkd.utils.fileio import DataError, PathLike, atomic_open

SPEED_KEYS = ("rtf", "utterances_per_second", "audio_seconds", "compute_seconds")


@dataclass
class Row:
    system: str
    decoding: str
    results: Dict[str, Dict] = field(default_factory=dict)  # test set -> result.json
    speeds: Dict[str, Dict] = field(default_factory=dict)  # test set -> speed.json
    params: Optional[int] = None

    @property
    def label(self) -> str:
        return f"{self.system} / {self.decoding}"

    def wer(self, test_set: str) -> Optional[float]:
        r = self.results.get(test_set)
        return None if r is None else float(r["wer"])

    def cer(self, test_set: str) -> Optional[float]:
        """Character error rate (%); None where not decoded or scored before scores had it."""
        r = self.results.get(test_set)
        return None if r is None or "cer" not in r else float(r["cer"])

    def speed(self) -> Dict[str, Optional[float]]:
        """RTF and utt/s over all the row's test sets: total compute seconds over total audio and utterances."""
        if not self.speeds:
            return {"rtf": None, "utterances_per_second": None}
        total = merge_speed(list(self.speeds.values()))
        return {"rtf": total["rtf"], "utterances_per_second": total["utterances_per_second"]}


def _load_json(path: Path, required: Sequence[str] = ()) -> Dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read JSON ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    lacking = [k for k in required if k not in data]
    if lacking:
        raise DataError(f"{path}: missing key(s) {', '.join(lacking)}")
    return data


def read_speed(test_dir: Path) -> Optional[Dict]:
    path = test_dir / "speed.json"
    return _load_json(path, ("utterances", "compute_seconds", "audio_seconds")) if path.is_file() else None


def _read_params(path: Path) -> Optional[int]:
    if not path.is_file():
        return None
    return int(_load_json(path, ("params",))["params"])


def collect(exp_dir: PathLike, systems: Optional[Sequence[str]] = None, decodings: Optional[Sequence[str]] = None,
            params: Optional[Dict[str, int]] = None) -> List[Row]:
    """Rows for every `<system>/decode_<decoding>/<test_set>/result.json` under exp_dir, ordered by `systems` and
    `decodings` when given (which also filter), else alphabetically. `params` maps `system` or
    `system/decoding` to a parameter count and overrides the params.json files."""
    exp_dir = Path(exp_dir)
    params = params or {}
    rows: Dict[Tuple[str, str], Row] = {}
    for result in sorted(exp_dir.glob("*/decode_*/*/result.json")):
        test_dir = result.parent
        decode_dir = test_dir.parent
        system, decoding = decode_dir.parent.name, decode_dir.name[len("decode_"):]
        if systems is not None and system not in systems or decodings is not None and decoding not in decodings:
            continue
        row = rows.setdefault((system, decoding), Row(system, decoding))
        row.results[test_dir.name] = _load_json(result, ("wer",))
        speed = read_speed(test_dir)
        if speed is not None:
            row.speeds[test_dir.name] = speed
    for (system, decoding), row in rows.items():
        decode_dir = exp_dir / system / f"decode_{decoding}"
        for value in (params.get(f"{system}/{decoding}"), params.get(system)):
            if value is not None:
                row.params = int(value)
                break
        else:
            row.params = _read_params(decode_dir / "params.json") or _read_params(exp_dir / system / "params.json")
        if row.params is None:  # the greedy decoder records the parameters it ran with
            counts = {int(v["inference_params"]) for v in row.speeds.values() if v.get("inference_params")}
            row.params = counts.pop() if len(counts) == 1 else None
    if not rows:
        raise DataError(f"{exp_dir}: no <system>/decode_<decoding>/<test_set>/result.json found")
    sys_order = {s: i for i, s in enumerate(systems or sorted({r.system for r in rows.values()}))}
    dec_order = {d: i for i, d in enumerate(decodings or sorted({r.decoding for r in rows.values()}))}
    return sorted(rows.values(), key=lambda r: (sys_order[r.system], dec_order[r.decoding]))


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _fmt_num(value: Optional[float]) -> str:
    """Three significant digits without exponent: 0.0123, 1.23, 850."""
    if value is None or math.isnan(value) or math.isinf(value):
        return "-"
    if value == 0:
        return "0"
    return f"{value:.{max(0, 2 - math.floor(math.log10(abs(value))))}f}"


def _fmt_params(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} M"


def render_markdown(rows: Sequence[Row], test_sets: Sequence[str], command: str, date: str,
                    plot_name: Optional[str] = "results.png", teacher: Optional[str] = None) -> str:
    """`teacher`: a line on the teacher's accuracy (espnet_bertkd.bin.teacher_accuracy's summary)."""
    lines = [
        "# RESULTS",
        "",
        f"- date: {date}",
        f"- command: `{command}`",
        "- WER / CER: word / character error rate (%; CER without spaces, as ESPnet's) from each decode's "
        "`result.json` (espnet_bertkd.recipe.bin.score); `-`: not decoded.",
        "- RTF: decoding compute seconds / audio seconds, utt/s: utterances / compute seconds, both summed over the "
        "row's test sets (`speed.json`).",
        "- params: parameters used at inference.",
        *([f"- teacher: {teacher}"] if teacher else []),
        "",
        "## WER (%), CER (%) and decoding speed",
        "",
        "| system / decoding | " + " | ".join(test_sets) + " | " + " | ".join(f"{t} CER" for t in test_sets)
        + " | RTF | utt/s | params |",
        "|---|" + "---:|" * (2 * len(test_sets) + 3),
    ]
    for row in rows:
        speed = row.speed()
        cells = [_fmt(row.wer(t), ".2f") for t in test_sets] + [_fmt(row.cer(t), ".2f") for t in test_sets]
        cells += [_fmt_num(speed["rtf"]), _fmt_num(speed["utterances_per_second"]), _fmt_params(row.params)]
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    if plot_name:
        lines += ["", f"![WER vs real-time factor]({plot_name})"]
    lines += ["", "## Details", ""]
    for row in rows:
        lines += [f"### {row.label}", "", "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for t in test_sets:
            r = row.results.get(t)
            if r is None:
                continue
            w = float(r["words"])
            pct = [100.0 * float(r[k]) / w for k in ("hits", "substitutions", "deletions", "insertions", "errors")]
            lines.append(f"|{t}|{r['sentences']}|{r['words']}|" + "|".join(f"{p:.1f}" for p in pct)
                         + f"|{float(r['ser']):.1f}|")
        lines.append("")
    return "\n".join(lines)


def plot(rows: Sequence[Row], test_sets: Sequence[str], path: PathLike) -> Optional[Path]:
    """WER against RTF (log scale): one colour per system / decoding (legend at the right: greedy systems share
    one RTF, so inline labels would collide), one marker per test set. Rows without speed cannot be placed and are
    left out; returns None if no row has both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    placed = [r for r in rows if r.speed()["rtf"] and any(r.wer(t) is not None for t in test_sets)]
    if not placed:
        return None
    markers = "osD^v<>phX*"
    colours = plt.get_cmap("tab10" if len(placed) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(8, 5.5))
    row_handles = []
    for i, row in enumerate(placed):
        rtf, colour = row.speed()["rtf"], colours(i % colours.N)
        for j, t in enumerate(test_sets):
            wer = row.wer(t)
            if wer is not None:
                ax.scatter([rtf], [wer], color=colour, marker=markers[j % len(markers)], s=55, alpha=0.85, zorder=3)
        row_handles.append(plt.Line2D([], [], color=colour, marker="o", linestyle="", label=row.label))
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("real-time factor (decoding compute s / audio s, log scale)")
    ax.set_ylabel("WER (%)")
    ax.set_title("WER vs decoding speed")
    ax.grid(True, which="both", alpha=0.3)
    ax.margins(x=0.15, y=0.1)
    set_handles = [plt.Line2D([], [], color="grey", marker=markers[j % len(markers)], linestyle="", label=t)
                   for j, t in enumerate(test_sets)]
    first = ax.legend(handles=row_handles, title="system / decoding", loc="upper left", bbox_to_anchor=(1.02, 1.0),
                      fontsize=9, borderaxespad=0)
    ax.add_artist(first)
    second = ax.legend(handles=set_handles, title="test set", loc="lower left", bbox_to_anchor=(1.02, 0.0),
                       fontsize=9, borderaxespad=0)
    path = Path(path)
    with atomic_open(path, "wb") as f:
        # "tight" with the legends named: they sit outside the axes and would be cut off
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight", bbox_extra_artists=[first, second])
    plt.close(fig)
    return path


def make_results(exp_dir: PathLike, output_dir: Optional[PathLike] = None, systems: Optional[Sequence[str]] = None,
                 decodings: Optional[Sequence[str]] = None, test_sets: Optional[Sequence[str]] = None,
                 params: Optional[Dict[str, int]] = None, command: str = "", date: Optional[str] = None,
                 teacher_accuracy: Optional[PathLike] = None) -> Tuple[Path, Optional[Path]]:
    """Write OUTPUT_DIR (default exp_dir)/RESULTS.md and results.png; returns their paths (png None if no row
    has a speed). `teacher_accuracy`: the JSON of espnet_bertkd.bin.teacher_accuracy, quoted in the header."""
    rows = collect(exp_dir, systems, decodings, params)
    found = sorted({t for r in rows for t in r.results})
    test_sets = list(test_sets) if test_sets else found
    out = Path(output_dir or exp_dir)
    date = date or datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    png = plot(rows, test_sets, out / "results.png")
    teacher = _load_json(Path(teacher_accuracy), ("summary",))["summary"] if teacher_accuracy else None
    md = render_markdown(rows, test_sets, command, date, png.name if png else None, teacher)
    with atomic_open(out / "RESULTS.md") as f:
        f.write(md)
    return out / "RESULTS.md", png
