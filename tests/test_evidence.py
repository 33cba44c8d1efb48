"""The evidence summary: per-seed WER/CER and spread, pooled paired tests, word errors, data sizes, the files the
CLI writes, and refusal of a missing decoding."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import evidence_summary
from homophones.evidence import claim, collect, summarise, verdict

REF = {"u1": "THEIR DOG RAN", "u2": "I SEE THE SEA", "u3": "TWO BOOKS"}
# hypotheses per system and seed (word errors in brackets)
HYPS = {
    "ctc/greedy": [{"u1": "THERE DOG RAN", "u2": "I SEA THE SEA", "u3": "TO BOOKS"},       # 3 errors
                   {"u1": "THERE DOG RAN", "u2": "I SEE THE SEA", "u3": "TO BOOK"}],       # 3 errors
    "inter_aed_kd/greedy": [{"u1": "THEIR DOG RAN", "u2": "I SEE THE SEA", "u3": "TO BOOKS"},  # 1 error
                            {"u1": "THEIR DOG RAN", "u2": "I SEE THE SEE", "u3": "TWO BOOKS"}],  # 1 error
    "aed/greedy": [{"u1": "THEIR DOG RAN", "u2": "I SEE THE SEA", "u3": "TWO BOOKS"},       # 0 errors
                   {"u1": "THERE DOG RAN", "u2": "I SEE THE SEA", "u3": "TWO BOOKS"}],      # 1 error
}


def build(root: Path, data: Path, hyps=HYPS, rtf=0.01) -> None:
    for test_set in ("dev", "test"):
        (data / test_set).mkdir(parents=True, exist_ok=True)
        (data / test_set / "text").write_text("".join(f"{u} {t}\n" for u, t in REF.items()))
    for system, per_seed in hyps.items():
        name, decoding = system.split("/")
        for seed, hyp in enumerate(per_seed):
            for test_set in ("dev", "test"):
                d = root / f"seed{seed}" / name / f"decode_{decoding}" / test_set
                (d / "1best_recog").mkdir(parents=True)
                (d / "1best_recog" / "text").write_text("".join(f"{u} {t}\n" for u, t in hyp.items()))
                (d / "speed.json").write_text(json.dumps({"utterances": 3, "compute_seconds": rtf * 10 * (seed + 1),
                                                          "audio_seconds": 10.0}))


def test_summary_numbers_by_hand(tmp_path):
    build(tmp_path / "exp", tmp_path / "data")
    results = collect(tmp_path / "exp", tmp_path / "data", [0, 1], list(HYPS), ["dev", "test"])
    s = summarise(results, [0, 1], [("inter_aed_kd/greedy", "ctc/greedy"), ("inter_aed_kd/greedy", "aed/greedy")],
                  samples=2000)
    ctc = s["systems"]["ctc/greedy"]
    assert ctc["test"] == pytest.approx([100 * 3 / 9, 100 * 3 / 9])
    assert ctc["test_mean_std"] == {"mean": pytest.approx(100 / 3), "std": pytest.approx(0.0)}
    # seed 1's compute is twice seed 0's: RTF 0.01 and 0.02 over both sets
    assert ctc["rtf"] == pytest.approx([0.01, 0.02])
    # CER without spaces: seed 0 of ctc: THEIR->THERE 2, SEE->SEA 1, TWO->TO 1 over 11 + 10 + 8 characters
    assert ctc["test_cer"][0] == pytest.approx(100 * 4 / 29)
    kd_vs_ctc = s["tests"]["inter_aed_kd-vs-ctc"]["test"]
    assert kd_vs_ctc["delta"] == pytest.approx(100 * (1 - 3) / 9)
    assert [r["delta"] for r in kd_vs_ctc["per_seed"]] == pytest.approx([100 * -2 / 9, 100 * -2 / 9])
    assert kd_vs_ctc["seeds"] == 2 and kd_vs_ctc["utterances"] == 3
    kd_vs_aed = s["tests"]["inter_aed_kd-vs-aed"]["test"]
    assert kd_vs_aed["delta"] == pytest.approx(100 * (2 - 1) / 2 / 9)
    assert claim(s, "inter_aed_kd/greedy", "aed/greedy", "test") == "not shown"


def test_claim_needs_significance_and_every_seed_agreeing():
    def summary(delta, p, per_seed):
        return {"tests": {"inter_aed_kd-vs-ctc": {"test": {"delta": delta, "p": p,
                                                            "per_seed": [{"delta": d} for d in per_seed]}}}}
    assert claim(summary(-2.0, 0.01, [-1.0, -3.0, -2.0]), "inter_aed_kd/greedy", "ctc/greedy", "test") == "holds"
    assert claim(summary(2.0, 0.01, [1.0, 3.0, 2.0]), "inter_aed_kd/greedy", "ctc/greedy", "test") == "reversed"
    # significant over utterances, but one seed went the other way: training noise is not excluded
    assert claim(summary(-2.0, 0.01, [-4.0, -3.0, 0.5]), "inter_aed_kd/greedy", "ctc/greedy", "test") == "not shown"
    assert claim(summary(-2.0, 0.2, [-1.0, -3.0, -2.0]), "inter_aed_kd/greedy", "ctc/greedy", "test") == "not shown"


def test_missing_decoding_is_named(tmp_path):
    hyps = {k: v for k, v in HYPS.items()}
    build(tmp_path / "exp", tmp_path / "data", hyps)
    with pytest.raises(Exception, match=r"seed2/ctc/decode_greedy/dev/1best_recog/text: no such file"):
        collect(tmp_path / "exp", tmp_path / "data", [0, 1, 2], ["ctc/greedy"], ["dev"])


def test_cli_writes_summary_tables_and_plots(tmp_path, capsys):
    build(tmp_path / "exp", tmp_path / "data")
    half = {k: v for k, v in HYPS.items() if k != "ctc/greedy"}
    build(tmp_path / "half", tmp_path / "data", half)
    (tmp_path / "train_text").write_text("".join(f"t{i} A\n" for i in range(10)))
    info = tmp_path / "corpus_info.json"
    info.write_text(json.dumps({"homophone_sets": [["THEIR", "THERE"], ["SEE", "SEA"], ["TO", "TWO"]],
                                "lm_only_words": ["BOOKS"]}))
    out = tmp_path / "evidence"
    evidence_summary.main([
        "--root", str(tmp_path / "exp"), "--data_dir", str(tmp_path / "data"), "--seeds", "0", "1",
        "--systems", *HYPS, "--test_sets", "dev", "test",
        "--compare", "inter_aed_kd/greedy:ctc/greedy", "inter_aed_kd/greedy:aed/greedy",
        "--corpus_info", str(info), "--train_text", str(tmp_path / "train_text"), "--sizes", f"0.5={tmp_path / 'half'}",
        "--samples", "500", "--output_dir", str(out), "--command", "local/evidence.sh", "--wall_seconds", "12",
    ])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["command"] == "local/evidence.sh"
    assert set(summary["systems"]) == set(HYPS)
    assert set(summary["tests"]) == {"inter_aed_kd-vs-ctc", "inter_aed_kd-vs-aed"}
    # 4 reference homophones (THEIR SEE SEA TWO) per seed; ctc confuses 3 of them in seed 0 (THERE, SEA, TO) and
    # 2 in seed 1 (THERE, TO); the LM-only BOOKS is right in seed 0 only
    errors = summary["word_errors"]["ctc/greedy"]["test"]
    assert errors["homophones"] == 8 and errors["lm_only"] == 2 and errors["others"] == 8
    assert errors["lm_only_correct"] == 50.0
    assert errors["homophones_confused"] == pytest.approx(100 * 5 / 8)
    sizes = summary["data_size"]
    assert sizes["0.5"]["utterances"] == 5 and sizes["1.0"]["utterances"] == 10
    assert sizes["0.5"]["gain"]["test"]["delta"] == pytest.approx(summary["tests"]["inter_aed_kd-vs-aed"]["test"]["delta"])
    md = (out / "RESULTS.md").read_text()
    assert "| ctc/greedy | 33.33 +- 0.00 | 33.33 +- 0.00 |" in md
    assert "| inter_aed_kd-vs-ctc | test | -22.22 |" in md
    row = next(line for line in md.splitlines() if line.startswith("| inter_aed_kd-vs-ctc | test |"))
    assert row.endswith(f"| {verdict(summary['tests']['inter_aed_kd-vs-ctc']['test'])} |")
    assert (out / "wer_vs_rtf.png").stat().st_size > 1000 and (out / "data_size.png").stat().st_size > 1000
    assert sizes["0.5"]["seeds"] == [0, 1] and "| 0.5 | 5 | 0 1 | test |" in md
    # the smaller sizes trained with seed 0 only: every size's row, the full data's too, uses seed 0 alone
    seed0 = {k: v[:1] for k, v in HYPS.items() if k != "ctc/greedy"}
    build(tmp_path / "half0", tmp_path / "data", seed0)
    evidence_summary.main([
        "--root", str(tmp_path / "exp"), "--data_dir", str(tmp_path / "data"), "--seeds", "0", "1",
        "--systems", *HYPS, "--test_sets", "test", "--train_text", str(tmp_path / "train_text"),
        "--sizes", f"0.5={tmp_path / 'half0'}", "--size_seeds", "0", "--samples", "100", "--output_dir", str(out)])
    sizes = json.loads((out / "summary.json").read_text())["data_size"]
    assert sizes["1.0"]["seeds"] == [0] and sizes["0.5"]["seeds"] == [0]
    # seed 0 alone: aed 0 errors, inter_aed_kd 1 error of 9 words
    assert sizes["1.0"]["gain"]["test"]["delta"] == pytest.approx(100 * 1 / 9)
    assert "| 1.0 | 10 | 0 | test | 0.00 | 11.11 | +11.11 |" in (out / "RESULTS.md").read_text()
    with pytest.raises(SystemExit, match="--sizes needs --train_text"):
        evidence_summary.main(["--root", str(tmp_path / "exp"), "--data_dir", str(tmp_path / "data"), "--seeds", "0",
                               "--systems", "aed/greedy", "--test_sets", "dev", "--sizes", "0.5=x",
                               "--output_dir", str(out)])
