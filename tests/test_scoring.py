"""Scoring with jiwer on hand-checked examples, result files, and the RESULTS.md / results.png collection."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import pytest

from espnet_bertkd.recipe.bin import make_results as results_cli
from espnet_bertkd.recipe.bin import score as score_cli
from espnet_bertkd.recipe.results import collect, make_results
from espnet_bertkd.recipe.score import score_texts, write_results
from espnet_bertkd.utils.fileio import DataError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_hand_checked_single_utterance(tmp_path):
    ref = write(tmp_path / "ref", "u1 A B C D\n")
    hyp = write(tmp_path / "hyp", "u1 A X C\n")
    r, utts = score_texts(ref, hyp)
    assert (r.hits, r.substitutions, r.deletions, r.insertions) == (2, 1, 1, 0)
    assert r.wer == 50.0 and r.words == 4 and r.hyp_words == 3 and r.sentences == 1 and r.ser == 100.0
    assert utts[0].alignment == [("A", "A", "C"), ("B", "X", "S"), ("C", "C", "C"), ("D", "", "D")]
    # CER without spaces, as ESPnet: "ABCD" -> "AXC" is one substitution and one deletion of 4 characters
    assert (r.chars, r.char_errors, r.cer) == (4, 2, 50.0)


def test_character_error_rate_ignores_spaces(tmp_path):
    ref = write(tmp_path / "ref", "u1 THEIR HOUSE\nu2 TO\n")
    hyp = write(tmp_path / "hyp", "u1 THE IRHOUSE\nu2 TWO\n")
    r, utts = score_texts(ref, hyp)
    assert r.wer == 100.0  # every word wrong ...
    assert [u.char_errors for u in utts] == [0, 1] and r.chars == 12  # ... but one character (TO -> TWO)
    assert r.cer == pytest.approx(100 / 12)


def test_corpus_totals_empty_hypothesis_and_insertions(tmp_path):
    ref = write(tmp_path / "ref", "u1 A B C D\nu2 E F\nu3 G\nu4 H I\n")
    # u2 decoded to nothing (ESPnet writes the id alone, sometimes with a trailing space), u3 has an insertion
    hyp = write(tmp_path / "hyp", "u1 A X C\nu2 \nu3 G Y\nu4 H I\n")
    r, _ = score_texts(ref, hyp)
    assert (r.hits, r.substitutions, r.deletions, r.insertions) == (5, 1, 3, 1)
    assert r.errors == 5 and r.words == 9 and r.wer == pytest.approx(100 * 5 / 9)
    assert (r.sentences, r.sentence_errors, r.ser) == (4, 3, 75.0)
    assert r.corr == pytest.approx(100 * 5 / 9)


def test_ignore_case(tmp_path):
    ref = write(tmp_path / "ref", "u1 HELLO World\n")
    hyp = write(tmp_path / "hyp", "u1 hello WORLD\n")
    assert score_texts(ref, hyp)[0].substitutions == 2
    assert score_texts(ref, hyp, ignore_case=True)[0].wer == 0.0


def test_missing_extra_and_duplicate_utterances(tmp_path):
    ref = write(tmp_path / "ref", "u1 A B\nu2 C D E\nu3 F\n")
    hyp = write(tmp_path / "hyp", "u1 A B\nu3 F\n")
    with pytest.raises(DataError) as e:
        score_texts(ref, hyp)
    assert f"{ref}:2: utterance u2: no hypothesis in {hyp}" in str(e.value)
    r, _ = score_texts(ref, hyp, allow_missing=True)
    assert (r.deletions, r.missing, r.wer) == (3, ["u2"], 50.0)
    write(hyp, "u1 A B\nu2 C D E\nu3 F\nu9 EXTRA\n")
    with pytest.raises(DataError) as e:
        score_texts(ref, hyp)
    assert f"{hyp}:4: utterance u9: not in the reference {ref}" in str(e.value)
    write(hyp, "u1 A B\nu2 C D E\nu2 C D E\nu3 F\n")
    with pytest.raises(DataError) as e:
        score_texts(ref, hyp)
    assert f"{hyp}:3: utterance u2: duplicate key (first on line 2)" in str(e.value)
    write(ref, "u1\nu2 B\n")  # an empty reference utterance: its hypothesis words are insertions
    write(hyp, "u1 A C\nu2 B\n")
    r, utts = score_texts(ref, hyp)
    assert (r.insertions, r.hits, r.wer, r.sentence_errors) == (2, 1, 200.0, 1)
    assert utts[0].alignment == [("", "A", "I"), ("", "C", "I")]
    write(ref, "u1\n")
    write(hyp, "u1 A\n")
    with pytest.raises(DataError, match="the reference has no words"):
        score_texts(ref, hyp)


def test_result_files(tmp_path):
    ref = write(tmp_path / "ref", "u1 A B C D\nu2 E F\n")
    hyp = write(tmp_path / "hyp", "u1 A X C\nu2 E F\n")
    result, utts = score_texts(ref, hyp)
    out = tmp_path / "decode" / "test_clean"
    write_results(result, utts, out)
    assert sorted(p.name for p in out.iterdir()) == ["result.json", "result.txt"]  # no temporary left
    data = json.loads((out / "result.json").read_text())
    assert {k: data[k] for k in ("sentences", "words", "hits", "substitutions", "deletions", "insertions",
                                 "errors", "sentence_errors", "wer", "ser")} == {
        "sentences": 2, "words": 6, "hits": 4, "substitutions": 1, "deletions": 1, "insertions": 0, "errors": 2,
        "sentence_errors": 1, "wer": pytest.approx(100 / 3), "ser": 50.0}
    txt = (out / "result.txt").read_text()
    assert "| Sum/Avg |      2       6 |   66.7   16.7   16.7    0.0   33.3   50.0 |" in txt
    assert "|test_clean|2|6|66.7|16.7|16.7|0.0|33.3|50.0|" in txt
    assert "REF:  A B C D\nHYP:  A X C ***\nEval:   S   D\n" in txt
    assert "id: (u2)" not in txt  # only utterances with errors are listed


def test_alignment_is_jiwers():
    """Per utterance, the alignment is jiwer's (process_words' chunks, one row a word) and the counts are jiwer's:
    they agree with each other and with an independent word edit distance, on random utterances."""
    import random

    import editdistance
    import jiwer

    from espnet_bertkd.recipe.score import _align

    rng = random.Random(0)
    for _ in range(300):
        ref = [rng.choice("ABCDE") for _ in range(rng.randint(0, 8))]
        hyp = [rng.choice("ABCDEF") for _ in range(rng.randint(0, 8))]
        u = _align(ref, hyp)
        ops = [op for _, _, op in u.alignment]
        assert (u.hits, u.substitutions, u.deletions, u.insertions) == tuple(ops.count(o) for o in "CSDI")
        assert [r for r, _, _ in u.alignment if r] == ref and [h for _, h, _ in u.alignment if h] == hyp
        assert all((r == h) == (op == "C") for r, h, op in u.alignment)
        assert u.errors == editdistance.eval(ref, hyp)
        if ref:
            out = jiwer.process_words(" ".join(ref), " ".join(hyp))
            assert (u.hits, u.substitutions, u.deletions, u.insertions) == (
                out.hits, out.substitutions, out.deletions, out.insertions)
    # the sclite-style block is ours (asserted byte for byte above); jiwer's visualize_alignment is another format
    assert "HYP: A X C *\n" in jiwer.visualize_alignment(jiwer.process_words("A B C D", "A X C"))


def test_score_cli(tmp_path, capsys):
    ref = write(tmp_path / "data" / "text", "u1 A B C D\nu2 E F\n")
    decode = tmp_path / "exp" / "ctc" / "decode_greedy" / "test"
    write(decode / "1best_recog" / "text", "u1 A X C\nu2 E F\n")
    # without speed.json (written last by every decoder) the decoding did not finish: refused, nothing scored
    with pytest.raises(SystemExit) as e:
        score_cli.main(["--ref", str(ref), "--decode_dir", str(decode)])
    assert "no speed.json, so its decoding did not finish" in str(e.value.code)
    assert not (decode / "result.json").exists()
    write(decode / "speed.json", "{}\n")
    score_cli.main(["--ref", str(ref), "--decode_dir", str(decode)])
    assert "WER 33.33% (2/6: 1 sub, 1 del, 0 ins)" in capsys.readouterr().out
    assert json.loads((decode / "result.json").read_text())["errors"] == 2
    write(decode / "1best_recog" / "text", "u1 A X C\n")
    with pytest.raises(SystemExit) as e:
        score_cli.main(["--ref", str(ref), "--decode_dir", str(decode)])
    assert f"{ref}:2: utterance u2: no hypothesis" in str(e.value.code)
    score_cli.main(["--ref", str(ref), "--decode_dir", str(decode), "--allow_missing"])
    assert json.loads((decode / "result.json").read_text())["missing"] == ["u2"]


# --------------------------------------------------------------------------------------------------------------
# RESULTS.md


def add_decode(exp: Path, system: str, decoding: str, test_set: str, ref: str, hyp: str,
               speed: Optional[Dict] = None) -> Path:
    d = exp / system / f"decode_{decoding}" / test_set
    r, utts = score_texts(write(d / "ref", ref), write(d / "1best_recog" / "text", hyp))
    write_results(r, utts, d)
    if speed is not None:
        write(d / "speed.json", json.dumps(speed))
    return d


def speed(compute: float, audio: float, utts: int) -> Dict:
    return {"rtf": compute / audio, "utterances_per_second": utts / compute, "audio_seconds": audio,
            "compute_seconds": compute, "utterances": utts}


@pytest.fixture
def exp(tmp_path) -> Path:
    exp = tmp_path / "exp"
    ref = "u1 A B C D\nu2 E F G H\n"  # 8 words
    add_decode(exp, "ctc", "greedy", "test_clean", ref, "u1 A B C D\nu2 E F G X\n", speed(1.0, 100.0, 2))  # 12.5
    add_decode(exp, "ctc", "greedy", "test_other", ref, "u1 A B C\nu2 E F G X\n", speed(3.0, 100.0, 2))  # 25
    add_decode(exp, "ctc", "beam10+LM", "test_clean", ref, "u1 A B C D\nu2 E F G H\n", speed(50.0, 100.0, 2))
    add_decode(exp, "ctc", "beam10+LM", "test_other", ref, "u1 A B C D\nu2 E F G\n", speed(70.0, 100.0, 2))
    add_decode(exp, "inter_aed_kd", "greedy", "test_clean", ref, "u1 A B C D\nu2 E F G H\n", speed(2.0, 100.0, 2))
    write(exp / "ctc" / "params.json", json.dumps({"params": 26_430_000}))
    write(exp / "ctc" / "decode_beam10+LM" / "params.json", json.dumps({"params": 26_430_000 + 50_000_000}))
    write(exp / "inter_aed_kd" / "params.json", json.dumps({"params": 26_430_000}))
    # no params.json: the count the greedy decoder recorded in speed.json
    add_decode(exp, "interctc", "greedy", "test_clean", ref, "u1 A B C D\nu2 E F G H\n",
               {**speed(1.0, 100.0, 2), "inference_params": 26_500_000})
    return exp


def test_collect_rows(exp):
    rows = collect(exp, systems=["inter_aed_kd", "ctc"], decodings=["greedy", "beam10+LM"])
    assert [r.label for r in rows] == ["inter_aed_kd / greedy", "ctc / greedy", "ctc / beam10+LM"]
    assert rows[1].wer("test_clean") == 12.5 and rows[1].wer("test_other") == 25.0
    assert rows[0].wer("test_other") is None
    assert rows[1].speed() == {"rtf": pytest.approx(4.0 / 200.0), "utterances_per_second": pytest.approx(4 / 4.0)}
    assert rows[0].speed() == {"rtf": pytest.approx(2.0 / 100.0), "utterances_per_second": pytest.approx(1.0)}
    assert [r.params for r in rows] == [26_430_000, 26_430_000, 76_430_000]
    assert collect(exp, systems=["interctc"])[0].params == 26_500_000


def test_make_results(exp, tmp_path):
    md, png = make_results(exp, tmp_path / "out", systems=["ctc", "inter_aed_kd"],
                           test_sets=["test_clean", "test_other"], params={"inter_aed_kd": 26_000_000},
                           command="python -m espnet_bertkd.recipe.bin.make_results --exp_dir exp", date="2025-01-02T03:04")
    text = md.read_text()
    assert "- date: 2025-01-02T03:04" in text
    assert "- command: `python -m espnet_bertkd.recipe.bin.make_results --exp_dir exp`" in text
    assert ("| system / decoding | test_clean | test_other | test_clean CER | test_other CER | RTF | utt/s | params |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|\n") \
        in text
    assert "| ctc / beam10+LM | 0.00 | 12.50 | 0.00 | 12.50 | 0.600 | 0.0333 | 76.43 M |" in text
    # CER: one wrong character of 8 (EFGH -> EFGX); test_other adds a deleted D
    assert "| ctc / greedy | 12.50 | 25.00 | 12.50 | 25.00 | 0.0200 | 1.00 | 26.43 M |" in text
    assert "| inter_aed_kd / greedy | 0.00 | - | 0.00 | - | 0.0200 | 1.00 | 26.00 M |" in text
    assert text.index("ctc / beam10+LM |") < text.index("ctc / greedy |") < text.index("inter_aed_kd / greedy |")
    assert "![WER vs real-time factor](results.png)" in text
    assert "|test_other|2|8|75.0|12.5|12.5|0.0|25.0|100.0|" in text  # details of ctc / greedy
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.pyplot as plt

    image = plt.imread(str(png))
    assert image.ndim == 3 and image.shape[0] > 400 and image.shape[1] > 800  # 8 x 5.5 in at 100 dpi + legends
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["RESULTS.md", "results.png"]


def test_make_results_cli(exp, capsys):
    results_cli.main(["--exp_dir", str(exp), "--params", "ctc/greedy=1000000"])
    assert "results.png" in capsys.readouterr().out
    text = (exp / "RESULTS.md").read_text()
    assert f"- command: `python -m espnet_bertkd.recipe.bin.make_results --exp_dir {exp} --params ctc/greedy=1000000`" \
        in text
    assert "- teacher:" not in text
    accuracy = write(exp / "teacher_accuracy.json", json.dumps({"summary": "top-1 0.712 of 1664 teacher tokens"}))
    results_cli.main(["--exp_dir", str(exp), "--teacher_accuracy", str(accuracy)])
    assert "- teacher: top-1 0.712 of 1664 teacher tokens\n" in (exp / "RESULTS.md").read_text()
    assert "| ctc / greedy | 12.50 | 25.00 | 12.50 | 25.00 | 0.0200 | 1.00 | 1.00 M |" in text
    (exp / "ctc" / "params.json").write_text("{not json")
    with pytest.raises(SystemExit) as e:
        results_cli.main(["--exp_dir", str(exp)])
    assert f"{exp}/ctc/params.json: cannot read JSON" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        results_cli.main(["--exp_dir", str(exp / "nothing")])
    assert "no <system>/decode_<decoding>/<test_set>/result.json found" in str(e.value.code)


def test_homophone_errors_hand_checked(tmp_path):
    from homophones.errors import count_homophone_errors, percent

    # THEIR->THERE confused, KNIGHT correct, TWO->TEN other error, SEE deleted; BOOKS correct, RODE->ROAD confused,
    # THE->A wrong; the inserted THERE has no reference word and is not counted.
    ref = write(tmp_path / "ref", "u1 THEIR KNIGHT TWO BOOKS\nu2 THE RODE SEE\n")
    hyp = write(tmp_path / "hyp", "u1 THERE KNIGHT TEN BOOKS THERE\nu2 A ROAD\n")
    _, utts = score_texts(ref, hyp)
    groups = [("THEIR", "THERE", "THEY'RE"), ("KNIGHT", "NIGHT"), ("TO", "TWO", "TOO"), ("ROAD", "RODE", "ROWED"),
              ("SEA", "SEE")]
    c = count_homophone_errors(utts, groups)
    assert (c.homophones, c.homophones_correct, c.homophones_confused) == (5, 1, 2)
    assert (c.others, c.others_correct) == (2, 1) and c.lm_only == 0
    # BOOKS as an LM-only word: counted apart from the other words
    c = count_homophone_errors(utts, groups, lm_only=["BOOKS"])
    assert (c.lm_only, c.lm_only_correct, c.others, c.others_correct) == (1, 1, 1, 0)
    assert c.add(c).percentages() == {"homophones_correct": 20.0, "homophones_confused": 40.0,
                                      "lm_only_correct": 100.0, "others_correct": 0.0}
    assert percent(c.homophones_confused, c.homophones) == 40.0 and percent(1, 0) != percent(1, 0)  # NaN


def test_homophone_errors_cli(tmp_path, capsys):
    import homophone_errors

    ref = write(tmp_path / "ref", "u1 THEY PUT THEIR BOOKS OVER THERE\n")
    write(tmp_path / "a" / "1best_recog" / "text", "u1 THEY PUT THERE BOOKS OVER THERE\n")
    write(tmp_path / "b" / "1best_recog" / "text", "u1 THEY PUT THEIR BOOKS OVER THERE\n")
    homophone_errors.main(["--ref", str(ref), str(tmp_path / "a"), str(tmp_path / "b")])
    rows = capsys.readouterr().out.splitlines()[2:]
    assert rows == [f"| {tmp_path / 'a'} | 2 | 50.0 | 50.0 | 0 | nan | 100.0 |",
                    f"| {tmp_path / 'b'} | 2 | 100.0 | 0.0 | 0 | nan | 100.0 |"]
    # the corpus' own groups and LM-only words: BOOKS is LM-only here, and wrong in decoding c
    info = write(tmp_path / "corpus_info.json", json.dumps({"homophone_sets": [["THEIR", "THERE"]],
                                                            "lm_only_words": ["BOOKS"]}))
    write(tmp_path / "c" / "1best_recog" / "text", "u1 THEY PUT THEIR BOOK OVER THERE\n")
    homophone_errors.main(["--ref", str(ref), "--corpus_info", str(info), str(tmp_path / "b"), str(tmp_path / "c")])
    rows = capsys.readouterr().out.splitlines()[2:]
    assert rows == [f"| {tmp_path / 'b'} | 2 | 100.0 | 0.0 | 1 | 100.0 | 100.0 |",
                    f"| {tmp_path / 'c'} | 2 | 100.0 | 0.0 | 1 | 0.0 | 100.0 |"]
    with pytest.raises(SystemExit, match="no such file"):
        homophone_errors.main(["--ref", str(ref), str(tmp_path / "missing")])
