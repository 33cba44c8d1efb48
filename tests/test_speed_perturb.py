"""Speed perturbation (ESPnet's --speed_perturb_factors) without sox: recipe.bin.perturb_speed writes the copies as
FLAC files and data/<train>_sp with ESPnet's ids, and bin.share_soft_labels gives the copies their source's soft
labels, which the training preflight accepts."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import kaldiio
import numpy as np
import pytest
import soundfile

from conftest import TEXTS
from espnet_bertkd.bin import share_soft_labels as share_cli
from espnet_bertkd.kd.extract import extract
from espnet_bertkd.kd.soft_labels import KD_DATA_NAMES, META_FILE, TEXT_HASH_FILE, strip_speed_prefix
from espnet_bertkd.kd.teacher_config import TeacherConfig
from espnet_bertkd.recipe.bin import perturb_speed as perturb_cli
from espnet_bertkd.tasks.data_check import c_sorted, validate_data_dir
from espnet_bertkd.tasks.preflight import check_soft_labels
from espnet_bertkd.utils.fileio import read_dict, read_pairs

RATE = 16000
TONE = 440.0  # Hz: a speed factor F moves it to F * 440 Hz
# two speakers, lengths that no factor divides evenly
LENGTHS = {"spkA-0001": 4001, "spkA-0002": 5333, "spkA-0003": 3210, "spkB-0001": 4567, "spkB-0002": 6007}
FACTORS = "0.9 1.0 1.1"


def write_source(root: Path) -> Path:
    """A valid Kaldi data directory: one 16-bit WAV (a 440 Hz tone and a little noise) per utterance."""
    d = root / "data" / "train"
    (d / "wav").mkdir(parents=True)
    rng = np.random.default_rng(0)
    utts = c_sorted(LENGTHS)
    for utt in utts:
        t = np.arange(LENGTHS[utt]) / RATE
        wave = 0.5 * np.sin(2 * np.pi * TONE * t) + 0.01 * rng.standard_normal(len(t))
        soundfile.write(str(d / "wav" / f"{utt}.wav"), wave, RATE, subtype="PCM_16")
    (d / "wav.scp").write_text("".join(f"{u} {d / 'wav' / u}.wav\n" for u in utts))
    (d / "text").write_text("".join(f"{u} {TEXTS[i]}\n" for i, u in enumerate(utts)))
    (d / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in utts))
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(u for u in utts if u.startswith(s))}\n"
                                       for s in ("spkA", "spkB")))
    validate_data_dir(d)
    return d


@pytest.fixture
def source(tmp_path) -> Path:
    return write_source(tmp_path)


def perturb(src: Path, dst: Path, audio: Path, *extra: str, factors: str = FACTORS) -> None:
    perturb_cli.main(["--src", str(src), "--dst", str(dst), "--audio_dir", str(audio), "--factors", factors,
                      *extra])


def refusal(call) -> str:
    """The one-line message an entry point exits with."""
    with pytest.raises(SystemExit) as err:
        call()
    return str(err.value.code)


def tables(d: Path) -> Dict[str, str]:
    return {name: (d / name).read_text() for name in ("wav.scp", "text", "utt2spk", "spk2utt")}


def samples(path: str) -> np.ndarray:
    return soundfile.read(path, dtype="int16")[0]


def peak_hz(path: str) -> float:
    wave, rate = soundfile.read(path)
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave)), n=1 << 16))
    return float(np.argmax(spectrum) * rate / (1 << 16))


# ------------------------------------------------------------------------------------------------ the data directory
def test_copies_scale_durations_and_take_espnet_ids(source, tmp_path):
    dst, audio = tmp_path / "data" / "train_sp", tmp_path / "dump" / "audio" / "train_sp"
    perturb(source, dst, audio)
    wav, text, utt2spk = read_dict(dst / "wav.scp"), read_dict(dst / "text"), read_dict(dst / "utt2spk")
    src_wav, src_text = read_dict(source / "wav.scp"), read_dict(source / "text")
    expected = c_sorted([p + u for p in ("", "sp0.9-", "sp1.1-") for u in LENGTHS])
    for name in ("wav.scp", "text", "utt2spk"):
        assert [k for k, _ in read_pairs(dst / name)] == expected  # C order, as Kaldi sorts
    assert validate_data_dir(dst, check_audio=True, fs=RATE).speakers == 6
    for utt, n in LENGTHS.items():
        assert wav[utt] == src_wav[utt]  # factor 1: the source's own entry
        assert utt2spk[utt] == utt.split("-")[0]
        for factor in (0.9, 1.1):
            copy = f"sp{factor}-{utt}"
            assert text[copy] == src_text[utt]
            assert utt2spk[copy] == f"sp{factor}-{utt.split('-')[0]}"
            assert wav[copy].endswith(f"sp{factor}/{utt.split('-')[0]}/{copy}.flac")
            info = soundfile.info(wav[copy])
            assert (info.format, info.subtype, info.samplerate) == ("FLAC", "PCM_16", RATE)
            assert abs(info.frames - n / factor) <= 2
            # pitch moves with tempo (sox speed), it is not a tempo change or a padding
            assert peak_hz(wav[copy]) == pytest.approx(TONE * factor, abs=2.0)
    spk2utt = read_dict(dst / "spk2utt")
    assert spk2utt["sp0.9-spkB"] == "sp0.9-spkB-0001 sp0.9-spkB-0002"
    assert strip_speed_prefix("sp0.9-spkB-0001") == "spkB-0001" and strip_speed_prefix("spkB-0001") is None


def test_two_jobs_give_what_one_job_gives_and_resume(source, tmp_path):
    one, one_audio = tmp_path / "one" / "train_sp", tmp_path / "one_audio"
    two, two_audio = tmp_path / "two" / "train_sp", tmp_path / "two_audio"
    perturb(source, one, one_audio, "--nj", "1")
    perturb(source, two, two_audio, "--nj", "2", "--job", "1")
    written = sorted(p.name for p in two_audio.rglob("*.flac"))
    assert written == sorted(f"sp{f}-{u}" + ".flac" for f in (0.9, 1.1) for u in c_sorted(LENGTHS)[:2])
    message = refusal(lambda: perturb(source, two, two_audio, "--nj", "2", "--finalise"))
    assert "6 perturbed files are missing" in message and "re-run job(s) 2 of --nj 2" in message
    assert not two.exists()
    perturb(source, two, two_audio, "--nj", "2", "--job", "2")
    perturb(source, two, two_audio, "--nj", "2", "--finalise")
    got, want = tables(two), tables(one)
    assert got["wav.scp"].replace(str(two_audio), str(one_audio)) == want["wav.scp"]
    assert {k: v for k, v in got.items() if k != "wav.scp"} == {k: v for k, v in want.items() if k != "wav.scp"}
    for (utt, a), (_, b) in zip(read_pairs(two / "wav.scp"), read_pairs(one / "wav.scp")):
        np.testing.assert_array_equal(samples(a), samples(b), err_msg=utt)

    # a re-run keeps complete files and redoes a deleted or damaged one
    files = sorted(two_audio.rglob("*.flac"))
    before = {p: p.stat().st_ino for p in files}
    files[0].unlink()
    files[1].write_bytes(b"not audio")
    perturb(source, two, two_audio, "--nj", "2", "--job", "1")
    perturb(source, two, two_audio, "--nj", "2", "--job", "2")
    assert files[0].exists() and files[1].stat().st_ino != before[files[1]]  # redone
    assert all(p.stat().st_ino == before[p] for p in files[2:])  # kept
    for (utt, a), (_, b) in zip(read_pairs(two / "wav.scp"), read_pairs(one / "wav.scp")):
        np.testing.assert_array_equal(samples(a), samples(b), err_msg=utt)


def test_refusals(source, tmp_path):
    audio = tmp_path / "audio"
    assert "is the source" in refusal(lambda: perturb(source, source, audio))
    assert "a parent of the source" in refusal(lambda: perturb(source, source.parent, audio))
    assert "inside --dst" in refusal(lambda: perturb(source, tmp_path / "sp", tmp_path / "sp" / "audio"))
    assert "positive decimal" in refusal(lambda: perturb(source, tmp_path / "sp", audio, factors="0.9 fast"))
    assert "repeats" in refusal(lambda: perturb(source, tmp_path / "sp", audio, factors="0.9 0.90"))
    assert "--job must be in 1..--nj (2), got 3" in refusal(
        lambda: perturb(source, tmp_path / "sp", audio, "--nj", "2", "--job", "3"))

    segmented = tmp_path / "segmented"
    segmented.mkdir()
    for name in ("wav.scp", "text", "utt2spk", "spk2utt"):
        (segmented / name).write_text((source / name).read_text())
    (segmented / "segments").write_text("".join(f"{u} {u} 0.0 0.1\n" for u in c_sorted(LENGTHS)))
    message = refusal(lambda: perturb(segmented, tmp_path / "sp", audio))
    assert f"{segmented / 'segments'}: segmented data directories are not supported yet" in message

    piped = tmp_path / "piped"
    piped.mkdir()
    for name in ("text", "utt2spk", "spk2utt"):
        (piped / name).write_text((source / name).read_text())
    wav = read_pairs(source / "wav.scp")
    wav[1] = (wav[1][0], f"sox {wav[1][1]} -t wav - |")
    (piped / "wav.scp").write_text("".join(f"{k} {v}\n" for k, v in wav))
    message = refusal(lambda: perturb(piped, tmp_path / "sp", audio))
    assert f"{piped / 'wav.scp'}:2: utterance spkA-0002: audio entry is a command" in message
    assert not (tmp_path / "sp").exists() and not audio.exists()


# ------------------------------------------------------------------------------------------------ shared soft labels
def preflight_args(text: Path, kd: Path, teacher_dir: str):
    from espnet2.tasks.asr import ASRTask

    argv = ["--model", "bertkd"]
    for split in ("train", "valid"):
        flag = f"--{split}_data_path_and_name_and_type"
        argv += [flag, f"{text},text,text", flag, f"{kd}/kd_token.scp,kd_token,kaldi_ark",
                 flag, f"{kd}/kd_prob.scp,kd_prob,kaldi_ark"]
    args = ASRTask.get_parser().parse_args(argv)
    args.model_conf = {"kd_layers": [1, 2], "teacher": {"model": teacher_dir, "topk": 4}}
    return args


def share(src: Path, text: Path, out: Path) -> None:
    share_cli.main(["--src_dir", str(src), "--text", str(text), "--output_dir", str(out)])


def loaded(kd: Path) -> Dict[str, List[np.ndarray]]:
    arrays = {name: kaldiio.load_scp(str(kd / f"{name}.scp")) for name in KD_DATA_NAMES}
    return {u: [np.asarray(arrays[name][u]) for name in KD_DATA_NAMES] for u in arrays[KD_DATA_NAMES[0]].keys()}


def test_copies_share_the_source_soft_labels_and_pass_the_preflight(source, tmp_path, teacher_dir):
    dst = tmp_path / "data" / "train_sp"
    perturb(source, dst, tmp_path / "audio", factors="1.0 0.9 1.1")
    kd, kd_sp = tmp_path / "dump" / "kd" / "train", tmp_path / "dump" / "kd" / "train_sp"
    config = TeacherConfig(model=teacher_dir, topk=4)
    assert extract(str(source / "text"), str(kd), config, nj=2, chunk_size=2)
    share(kd, dst / "text", kd_sp)
    check_soft_labels(preflight_args(dst / "text", kd_sp, teacher_dir))

    src_labels, sp_labels = loaded(kd), loaded(kd_sp)
    assert list(sp_labels) == [u for u, _ in read_pairs(dst / "text")]
    for utt in LENGTHS:
        for copy in (utt, f"sp0.9-{utt}", f"sp1.1-{utt}"):
            for got, want in zip(sp_labels[copy], src_labels[utt]):
                np.testing.assert_array_equal(got, want, strict=True)
    for name in KD_DATA_NAMES:  # the same ark offsets: nothing copied
        src_scp, sp_scp = read_dict(kd / f"{name}.scp"), read_dict(kd_sp / f"{name}.scp")
        assert all(sp_scp[f"sp1.1-{u}"] == src_scp[u] for u in LENGTHS)
    assert not list(kd_sp.glob("**/*.ark"))
    assert (kd_sp / META_FILE).read_bytes() == (kd / META_FILE).read_bytes()
    src_hash, sp_hash = read_dict(kd / TEXT_HASH_FILE), read_dict(kd_sp / TEXT_HASH_FILE)
    assert all(sp_hash[f"sp0.9-{u}"] == src_hash[u] for u in LENGTHS)

    # an edited transcript of a copy: the preflight refuses the shared labels, and sharing refuses it by name
    pairs = read_pairs(dst / "text")
    edited = dict(pairs, **{"sp1.1-spkB-0001": "THE DOGS SEE THE KNIGHT"})
    (dst / "text").write_text("".join(f"{u} {edited[u]}\n" for u, _ in pairs))
    with pytest.raises(ValueError, match=r"for 1 of its 15 utterances: 'sp1\.1-spkB-0001'"):
        check_soft_labels(preflight_args(dst / "text", kd_sp, teacher_dir))
    before = {p.name: p.read_bytes() for p in kd_sp.iterdir()}
    message = refusal(lambda: share(kd, dst / "text", kd_sp))
    assert "1 of its 15 utterances have another transcript" in message and "'sp1.1-spkB-0001'" in message
    assert {p.name: p.read_bytes() for p in kd_sp.iterdir()} == before  # left as it was

    # an utterance without a source, and sharing into the source itself
    (tmp_path / "orphan").write_text("sp0.9-spkC-0001 I WANT TO GO TOO\n")
    message = refusal(lambda: share(kd, tmp_path / "orphan", kd_sp))
    assert "1 of its 1 utterances have no soft labels" in message and "'sp0.9-spkC-0001'" in message
    assert f"holds the input {kd}" in refusal(lambda: share(kd, dst / "text", kd))
    assert f"holds the input {kd}" in refusal(lambda: share(kd, dst / "text", kd.parent))

    # the source re-extracted for its own edited text (the copies' text follows it): sharing again rewrites the dir
    src_pairs = read_pairs(source / "text")
    new = dict(src_pairs, **{"spkB-0001": "THE DOGS SEE THE KNIGHT"})
    (source / "text").write_text("".join(f"{u} {new[u]}\n" for u, _ in src_pairs))
    (dst / "text").write_text("".join(f"{u} {new[strip_speed_prefix(u) or u]}\n" for u, _ in pairs))
    assert extract(str(source / "text"), str(kd), config, nj=2, chunk_size=2)
    share(kd, dst / "text", kd_sp)
    check_soft_labels(preflight_args(dst / "text", kd_sp, teacher_dir))
    moved = read_dict(kd_sp / "kd_token.scp")["sp0.9-spkB-0001"]
    assert "/update/" in moved and moved == read_dict(kd / "kd_token.scp")["spkB-0001"]
    np.testing.assert_array_equal(loaded(kd_sp)["sp1.1-spkB-0001"][0], loaded(kd)["spkB-0001"][0])
    assert json.loads((kd_sp / META_FILE).read_text()) == json.loads((kd / META_FILE).read_text())
