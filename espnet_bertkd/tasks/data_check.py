"""Validate Kaldi-style data directories and the tables ESPnet's loader reads, as Kaldi's
`utils/validate_data_dir.sh --no-feats` does (the pip install of ESPnet has none). The training preflight runs it;
the recipe toolkit's fix and combine tools (espnet_bertkd.recipe.datadir) call it on what they write.

ESPnet's data loaders assume what these scripts enforce: every table sorted by key in C (byte) order, no duplicate
keys, the same utterances in wav.scp (or segments), text and utt2spk, spk2utt the inverse of utt2spk, speaker ids
prefixes of utterance ids. A violation shows up much later as a silent mismatch or a crash in a worker; here it is
reported up front with the file, the line and the utterance.
"""
from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from espnet_bertkd.utils.fileio import DataError, Entry, PathLike, location, read_table

# Characters of LibriSpeech transcripts (upper-case letters and the apostrophe; the space separates words).
CHARSETS = {"librispeech": "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"}
# Utterance-level tables checked for the same keys as utt2spk when present.
UTT_TABLES = ("text", "utt2spk", "utt2dur", "utt2num_samples", "utt2category", "utt2lang")
# Audio headers read between two progress messages (a 281k-utterance set takes minutes on a network disk).
PROGRESS_EVERY = 20000


@dataclass
class Report:
    """What validation found: counts and the non-fatal findings (warnings)."""

    utterances: int = 0
    speakers: int = 0
    warnings: List[str] = field(default_factory=list)


@dataclass
class Charset:
    """The transcript characters a model can represent. The others turn into <unk> (or a crash) deep in training,
    so validation names them up front.

    `known` decides one character (asked once per distinct character: a corpus has few); `normalize` is what runs
    on a transcript before it is tokenised (a text cleaner, removing non-linguistic symbols such as <noise>).
    Whitespace is always allowed (it separates words).
    """

    known: Callable[[str], bool]
    name: str = "the allowed set"
    normalize: Optional[Callable[[str], str]] = None
    _decided: Dict[str, bool] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, chars: Iterable[str], name: str = "the allowed set") -> "Charset":
        """A fixed set of characters (a CHARSETS name or the characters themselves)."""
        allowed = frozenset(CHARSETS.get(chars, chars) if isinstance(chars, str) else chars)
        return cls(allowed.__contains__, name)

    def unknown(self, text: str) -> List[str]:
        """The characters of `text` outside the set, sorted."""
        if self.normalize is not None:
            text = self.normalize(text)
        bad = []
        for c in set(text):
            if c.isspace():
                continue
            if c not in self._decided:
                self._decided[c] = bool(self.known(c))
            if not self._decided[c]:
                bad.append(c)
        return sorted(bad)


def c_sorted(keys: Iterable[str]) -> List[str]:
    """C-locale order: by UTF-8 bytes, which for Python strings is code point order."""
    return sorted(keys, key=lambda k: k.encode("utf-8"))


def spk2utt(utt2spk: Iterable[Tuple[str, str]]) -> Dict[str, List[str]]:
    """speaker -> its utterances in C order, from (utterance, speaker) pairs: what spk2utt must hold (Kaldi's
    utt2spk_to_spk2utt.pl on a sorted utt2spk). The one definition used by validation, fix_data_dir,
    combine_data_dirs and LibriSpeech data preparation."""
    by_speaker: Dict[str, List[str]] = {}
    for utt, speaker in sorted(utt2spk, key=lambda pair: pair[0].encode("utf-8")):
        by_speaker.setdefault(speaker, []).append(utt)
    return by_speaker


def spk2utt_rows(utt2spk: Iterable[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """The lines of spk2utt, `(speaker, "utt1 utt2 ...")` in C order of speaker, for write_table."""
    by_speaker = spk2utt(utt2spk)
    return [(s, " ".join(by_speaker[s])) for s in c_sorted(by_speaker)]


def _read(path: Path, problems: List[str]) -> Optional[List[Entry]]:
    """Read a table (read_table: also final newline, no carriage returns, no BOM) and check it is sorted with unique
    keys; problems are appended, None if unreadable."""
    try:
        entries = read_table(path)
    except DataError as e:
        problems.extend(e.problems)
        return None
    for prev, cur in zip(entries, entries[1:]):
        if cur.key.encode("utf-8") < prev.key.encode("utf-8"):
            problems.append(f"{location(path, cur.line, cur.key)}: not sorted (comes before {prev.key} on line "
                            f"{prev.line} in C order; run fix_data_dir)")
            break
    return entries


def _compare_keys(ref_path: Path, ref: List[Entry], path: Path, entries: List[Entry], problems: List[str]) -> None:
    ref_keys = {e.key for e in ref}
    keys = {e.key for e in entries}
    for e in ref:
        if e.key not in keys:
            problems.append(f"{location(ref_path, e.line, e.key)}: missing from {path}")
    for e in entries:
        if e.key not in ref_keys:
            problems.append(f"{location(path, e.line, e.key)}: not in {ref_path}")


def _entries_to_check(entries: Optional[List[Entry]], utterances: Optional[Set[str]]) -> List[Entry]:
    """The entries whose contents get checked: all, or those a data loader will actually read."""
    if entries is None:
        return []
    return entries if utterances is None else [e for e in entries if e.key in utterances]


def _check_text(path: Path, entries: List[Entry], charset: Optional[Charset], allow_empty: bool,
                problems: List[str], warnings: List[str]) -> None:
    for e in entries:
        if not e.value.strip():
            (warnings if allow_empty else problems).append(f"{location(path, e.line, e.key)}: empty transcript")
            continue
        bad = charset.unknown(e.value) if charset is not None else []
        if bad:
            shown = " ".join(repr(c) for c in bad)
            problems.append(f"{location(path, e.line, e.key)}: character(s) outside {charset.name}: {shown}")


# ESPnet's loaders of an audio list (--*_data_path_and_name_and_type PATH,speech,TYPE) whose entries are checked the
# way that loader reads them; "auto" (a wav.scp that is no loader input, or validate_data_dir on its own) judges each
# entry by its form.
AUDIO_TYPES = ("sound", "kaldi_ark", "auto")
# What starts an object in an ark, as ESPnet's kaldi_ark reader (omniio) tells them apart: binary "\0B", an audio
# payload of the extended ark ("AUDIO"), a bare RIFF/FLAC/Ogg/Matroska file; else a text object (a number or "[").
ARK_OBJECT_STARTS = (b"\0B", b"AUDIO", b"RIFF", b"fLaC", b"OggS", b"\x1aE\xdf\xa3")
TEXT_OBJECT_STARTS = b"[-+.0123456789"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".sph", ".aiff", ".aif", ".au", ".opus", ".mp3")
PIPE_FIX = ("convert the audio to files first and list the files (ESPnet's recipes do this in their dump stage with "
            "egs2/TEMPLATE/asr1/scripts/audio/format_wav_scp.sh, which is not in ESPnet's pip install; "
            "espnet_bertkd.recipe.bin.prepare_librispeech lists LibriSpeech's .flac files directly)")


def is_command(value: str) -> bool:
    """A Kaldi 'extended filename' that is a command: `cmd ... |` (read its output) or `| cmd`, also with an ark
    offset or a slice after it (`cmd |:123`, `cmd |[0:9]`), which kaldiio would still run."""
    stripped = value.strip()
    head = ark_offset(re.sub(r"\[[^\]]*\]$", "", stripped))[0].strip()
    return any(s.endswith("|") or s.startswith("|") for s in (stripped, head))


def ark_offset(value: str) -> Tuple[str, Optional[int]]:
    """`file.ark:1234` -> ("file.ark", 1234), as ESPnet's kaldi_ark loader splits it; (value, None) without one."""
    head, sep, tail = value.rpartition(":")
    if sep and tail.isdigit():
        return head, int(tail)
    return value, None


def command_problem(where: str, key: str, value: str, audio_type: str) -> str:
    """Why an audio entry that is a command is refused, and the fix (naming the file it decodes where it names one)."""
    import shlex

    try:
        words = shlex.split(value.strip().strip("|"))
    except ValueError:
        words = []
    sources = [w for w in words if w.lower().endswith(AUDIO_SUFFIXES)]
    direct = (f"; this one only decodes {sources[0]}, which ESPnet's sound loader reads itself: list "
              f"`{key} {sources[0]}` instead" if len(sources) == 1 else "")
    reason = ("ESPnet's sound loader opens files only, it cannot run commands" if audio_type == "sound" else
              "ESPnet's kaldi_ark loader would run it through a shell; this plugin runs no command from a data file")
    return f"{where}: audio entry is a command ({value!r}): {reason}. Fix: {PIPE_FIX}{direct}"


def _check_ark_entry(where: str, value: str, read_headers: bool, problems: List[str]) -> None:
    """An entry as ESPnet's kaldi_ark loader reads it: `ARK:OFFSET` (the ark exists, the offset is inside it and, with
    `read_headers`, a Kaldi object or an audio payload starts there) or a file holding one object."""
    ark, offset = ark_offset(value)
    if not Path(ark).is_file():
        problems.append(f"{where}: ark file {ark} does not exist" if offset is not None else
                        f"{where}: file {value} does not exist")
        return
    if offset is None:
        return
    size = Path(ark).stat().st_size
    if offset >= size:
        problems.append(f"{where}: offset {offset} is beyond the end of {ark} ({size} bytes; the scp does not belong "
                        "to this ark: regenerate it)")
        return
    if read_headers:
        with open(ark, "rb") as f:
            f.seek(offset)
            start = f.read(16)
        text = start.lstrip(b" \t")
        if not (any(start.startswith(m) for m in ARK_OBJECT_STARTS) or text[:1] and text[:1] in TEXT_OBJECT_STARTS):
            problems.append(f"{where}: no Kaldi object at offset {offset} of {ark} (the scp does not belong to this "
                            "ark: regenerate it)")


FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # the only sample formats that can hold NaN or inf (PCM and FLAC cannot)


def _finite(audio: Path, block: int = 1 << 20) -> bool:
    """Whether every sample of a float audio file is finite (read in blocks: a long recording stays cheap)."""
    import numpy as np
    import soundfile

    with soundfile.SoundFile(str(audio)) as f:
        for chunk in f.blocks(blocksize=block, dtype="float64", always_2d=True):
            if not np.isfinite(chunk).all():
                return False
    return True


def _check_audio(path: Path, entries: List[Entry], check_audio: bool, fs: Optional[int], problems: List[str],
                 warnings: List[str], audio_type: str = "auto", channels: Optional[int] = None) -> None:
    """Each entry the way the declared loader reads it (AUDIO_TYPES). sound: the file exists and, with
    `check_audio` (or `fs`), its header is read: readable, samples, sample rate, `channels`. kaldi_ark: the ark
    exists and the offset is inside it (_check_ark_entry). A float file's samples are read too: NaN or inf in one
    utterance make feats_stats.npz and so every update NaN. A command (`... |`) is refused for both (command_problem);
    "auto" judges by form, only warning about commands."""
    import soundfile

    if audio_type not in AUDIO_TYPES:
        raise ValueError(f"audio_type must be one of {AUDIO_TYPES}, got {audio_type!r}")
    pipes = 0
    read_headers = check_audio or fs is not None
    start = time.monotonic()
    for n, e in enumerate(entries, 1):
        if read_headers and n % PROGRESS_EVERY == 0:
            logging.info("%s: %d of %d audio files checked (%.0f s)", path, n, len(entries), time.monotonic() - start)
        value = e.value
        where = location(path, e.line, e.key)
        if not value:
            problems.append(f"{where}: no audio path")
            continue
        if is_command(value):
            if audio_type == "auto":
                pipes += 1  # a command: only running it would tell
            else:
                problems.append(command_problem(where, e.key, value, audio_type))
            continue
        if audio_type == "kaldi_ark" or (audio_type == "auto" and not Path(value).is_file()
                                         and ark_offset(value)[1] is not None):
            _check_ark_entry(where, value, read_headers, problems)
            continue
        audio = Path(value)
        if not audio.is_file():
            problems.append(f"{where}: audio file {value} does not exist")
            continue
        if not read_headers:
            continue
        try:
            info = soundfile.info(str(audio))
        except Exception as err:  # soundfile raises RuntimeError/LibsndfileError/TypeError depending on the file
            problems.append(f"{where}: cannot read {value}: {err}")
            continue
        if info.frames == 0:
            problems.append(f"{where}: {value} has no samples")
        elif info.subtype in FLOAT_SUBTYPES and not _finite(audio):
            problems.append(f"{where}: {value} holds NaN or infinite samples (a float {info.format} file): the "
                            "features, their statistics and every gradient would be NaN; fix or drop the file")
        if fs is not None and info.samplerate != fs:
            problems.append(f"{where}: {value} has sample rate {info.samplerate}, expected {fs}")
        if channels is not None and info.channels != channels:
            problems.append(f"{where}: {value} has {info.channels} channels, the model expects {channels} (mono): "
                            "ESPnet cannot batch it with mono audio; downmix it (e.g. `sox IN OUT remix -`)"
                            if channels == 1 else
                            f"{where}: {value} has {info.channels} channels, the model expects {channels}")
    if pipes:
        warnings.append(f"{path}: {pipes} entries are commands ('... |'); their audio was not checked, and ESPnet's "
                        f"sound loader cannot read them: {PIPE_FIX}")


def _check_speakers(data_dir: Path, utt2spk: List[Entry], problems: List[str]) -> int:
    path = data_dir / "utt2spk"
    for e in utt2spk:
        if len(e.value.split()) != 1:
            problems.append(f"{location(path, e.line, e.key)}: expected exactly one speaker id, got {e.value!r}")
    by_speaker = spk2utt((e.key, e.value) for e in utt2spk)
    # Sorting by speaker must not reorder utterances (Kaldi: "make speaker-ids prefixes of utt-ids").
    order = sorted(utt2spk, key=lambda e: (e.value.encode("utf-8"), e.key.encode("utf-8")))
    for a, b in zip(order, utt2spk):
        if a.key != b.key:
            problems.append(f"{location(path, b.line, b.key)}: utt2spk is not in sorted order when sorted first on "
                            f"speaker id (found {b.key}, expected {a.key}); make speaker ids prefixes of "
                            "utterance ids")
            break
    spk2utt_path = data_dir / "spk2utt"
    spk2utt_entries = _read(spk2utt_path, problems) if spk2utt_path.is_file() else None
    if spk2utt_entries is None:
        if not spk2utt_path.is_file():
            problems.append(f"{spk2utt_path}: no such file (fix_data_dir writes it from utt2spk)")
        return len(by_speaker)
    listed: Set[str] = set()
    for e in spk2utt_entries:
        listed.add(e.key)
        expected = by_speaker.get(e.key)
        if expected is None:
            problems.append(f"{location(spk2utt_path, e.line)}: speaker {e.key} has no utterance in utt2spk")
        elif e.value.split() != expected:
            extra = sorted(set(e.value.split()) - set(expected))
            lacking = sorted(set(expected) - set(e.value.split()))
            detail = (f"not in utt2spk for this speaker: {' '.join(extra[:5])}" if extra else
                      f"missing: {' '.join(lacking[:5])}" if lacking else "utterances out of order")
            problems.append(f"{location(spk2utt_path, e.line)}: speaker {e.key} disagrees with utt2spk ({detail})")
    for speaker in c_sorted(set(by_speaker) - listed):
        problems.append(f"{spk2utt_path}: speaker {speaker} (utterance {by_speaker[speaker][0]} in utt2spk) "
                        "is missing")
    gender_path = data_dir / "spk2gender"
    if gender_path.is_file():
        genders = _read(gender_path, problems) or []
        for e in genders:
            if e.value not in ("m", "f"):
                problems.append(f"{location(gender_path, e.line)}: speaker {e.key}: gender must be m or f, "
                                f"not {e.value!r}")
        have = {e.key for e in genders}
        for speaker in c_sorted(set(by_speaker) - have):
            problems.append(f"{gender_path}: speaker {speaker} is missing")
    return len(by_speaker)


def validate_data_dir(data_dir: PathLike, check_audio: bool = False, fs: Optional[int] = None,
                      allowed_chars: Optional[str] = None, allow_empty_text: bool = False,
                      require_text: bool = True, charset: Optional[Charset] = None,
                      utterances: Optional[Set[str]] = None, audio_type: str = "auto",
                      channels: Optional[int] = None) -> Report:
    """Check a data directory; raise DataError listing every problem, else return a Report.

    `check_audio` opens each audio file's header (readable, non-empty); `fs` also checks its sample rate.
    `allowed_chars` is a string of allowed transcript characters (whitespace always allowed) or a CHARSETS name;
    `charset` is the general form (e.g. what a token list can represent). Empty transcripts are errors unless
    `allow_empty_text` (then warnings). `utterances` limits the transcript and audio contents checks to those
    utterances (what one job reads); the tables themselves are always checked whole. `audio_type` is the loader that
    reads wav.scp (_check_audio: sound, kaldi_ark, or auto: by each entry's form); `channels` the channel count the
    model expects (checked where headers are read).
    """
    if allowed_chars is not None:
        if charset is not None:
            raise ValueError("give allowed_chars or charset, not both")
        charset = Charset.of(allowed_chars)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such directory")
    problems: List[str] = []
    report = Report()
    required = ["wav.scp", "utt2spk", "spk2utt"] + (["text"] if require_text else [])
    for name in required:
        if not (data_dir / name).is_file():
            problems.append(f"{data_dir / name}: no such file")
    if problems:
        raise DataError(problems)

    utt2spk_path = data_dir / "utt2spk"
    utt2spk = _read(utt2spk_path, problems)
    if utt2spk is None:
        # nothing to compare against, but the other tables' own problems are reported too, not one file per run
        for name in (*UTT_TABLES, "segments", "wav.scp", "spk2utt", "spk2gender"):
            if name != "utt2spk" and (data_dir / name).is_file():
                _read(data_dir / name, problems)
        raise DataError(problems)
    report.utterances = len(utt2spk)
    if not utt2spk:
        problems.append(f"{utt2spk_path}: no utterances")

    for name in UTT_TABLES:
        path = data_dir / name
        if name == "utt2spk" or not path.is_file():
            continue
        entries = _read(path, problems)
        if entries is None:
            continue
        _compare_keys(utt2spk_path, utt2spk, path, entries, problems)
        if name == "text":
            checked = _entries_to_check(entries, utterances)
            _check_text(path, checked, charset, allow_empty_text, problems, report.warnings)

    wav_path = data_dir / "wav.scp"
    wavs = _read(wav_path, problems)
    segments_path = data_dir / "segments"
    if segments_path.is_file():
        segments = _read(segments_path, problems)
        if segments is not None:
            _compare_keys(utt2spk_path, utt2spk, segments_path, segments, problems)
            recordings = {e.key for e in wavs or []}
            durations = _durations(wavs) if check_audio and wavs is not None else {}
            for e in segments:
                problem = _segment_problem(e.value.split(), recordings if wavs is not None else None, durations,
                                           wav_path)
                if problem:
                    problems.append(f"{location(segments_path, e.line, e.key)}: {problem}")
    elif wavs is not None:
        _compare_keys(utt2spk_path, utt2spk, wav_path, wavs, problems)
    if wavs is not None:
        # With segments, wav.scp lists recordings, not utterances: all of them are checked.
        audio = wavs if segments_path.is_file() else _entries_to_check(wavs, utterances)
        _check_audio(wav_path, audio, check_audio, fs, problems, report.warnings, audio_type, channels)

    report.speakers = _check_speakers(data_dir, utt2spk, problems)
    if problems:
        raise DataError(problems)
    for w in report.warnings:
        logging.warning(w)
    return report


def _durations(wavs: List[Entry]) -> Dict[str, float]:
    """Recording id -> seconds, from the headers of the files wav.scp lists (others are left out)."""
    import soundfile

    durations = {}
    for e in wavs:
        try:
            info = soundfile.info(e.value)
        except Exception:  # noqa: BLE001  (_check_audio reports unreadable files)
            continue
        durations[e.key] = info.frames / info.samplerate
    return durations


SEGMENT_SLACK = 0.05  # seconds an end time may pass the recording's end (Kaldi's extract-segments allows rounding)


def _segment_problem(fields: List[str], recordings: Optional[Set[str]], durations: Dict[str, float],
                     wav_path: Path) -> Optional[str]:
    """What is wrong with one segments line's `<recording> <start> <end>`, or None."""
    if len(fields) != 3:
        return "expected '<utt> <recording> <start> <end>'"
    recording, start_text, end_text = fields
    try:
        start, end = float(start_text), float(end_text)
    except ValueError:
        return f"start and end must be times in seconds, got {start_text!r} {end_text!r}"
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        return f"the segment {start_text} to {end_text} is empty or reversed (0 <= start < end)"
    if recordings is not None and recording not in recordings:
        return f"recording {recording} not in {wav_path}"
    if recording in durations and end > durations[recording] + SEGMENT_SLACK:
        return f"ends at {end_text} s, past the end of recording {recording} ({durations[recording]:.2f} s)"
    return None


SEGMENTS_UNSUPPORTED = ("training and decoding read wav.scp entries as utterances, but with a segments file they "
                        "are recordings: cut the segments into files first, as ESPnet's asr.sh stage 3 does "
                        "(scripts/audio/format_wav_scp.sh --segments SEGMENTS WAV_SCP OUT_DIR), and use that "
                        "wav.scp in a directory without segments")


def segments_beside(speech: PathLike) -> Optional[Path]:
    """The `segments` file of the data directory a loader's wav.scp is in, if there is one."""
    path = Path(speech)
    segments = path.parent / "segments"
    return segments if path.name == "wav.scp" and segments.is_file() else None


def is_data_dir(path: PathLike) -> bool:
    """A Kaldi data directory is one with utt2spk (ESPnet's dump directories are ones too)."""
    return (Path(path) / "utt2spk").is_file()


def _read_quietly(path: Path) -> Optional[List[Entry]]:
    """Read a table whose problems are reported elsewhere (None if unreadable)."""
    try:
        return read_table(path)
    except DataError:
        return None


def _read_keys(key_files: Sequence[PathLike], problems: List[str]) -> Optional[List[Tuple[Path, Entry]]]:
    """The utterances listed in key files (ESPnet's shape files): what the data loader will read."""
    if not key_files:
        return None
    listed: List[Tuple[Path, Entry]] = []
    for f in key_files:
        try:
            listed.extend((Path(f), e) for e in read_table(f))
        except DataError as err:
            problems.extend(err.problems)
    return listed


def _validate_dirs(covered: Set[Path], utterances: Optional[Set[str]], check_audio: bool, fs: Optional[int],
                   charset: Optional[Charset], allow_empty_text: bool, problems: List[str], report: Report,
                   speech_type: str = "sound", channels: Optional[int] = None) -> None:
    """validate_data_dir on each directory whose wav.scp or text is an input, checking the contents of those."""
    for d in sorted({p.parent for p in covered}):
        roles = {p.name for p in covered if p.parent == d}
        try:
            found = validate_data_dir(
                d, check_audio=check_audio and "wav.scp" in roles, fs=fs if "wav.scp" in roles else None,
                charset=charset if "text" in roles else None, allow_empty_text=allow_empty_text or "text" not in roles,
                require_text="text" in roles, utterances=utterances,
                audio_type=speech_type if "wav.scp" in roles else "auto",
                channels=channels if "wav.scp" in roles else None)
        except DataError as err:
            problems.extend(err.problems)
            continue
        report.utterances = max(report.utterances, found.utterances)


def _check_listed(listed: List[Tuple[Path, Entry]], path: Path, entries: List[Entry], problems: List[str]) -> None:
    """Each utterance a key file lists must be in the table, or a worker fails on it mid-epoch."""
    keys = {e.key for e in entries}
    problems.extend(f"{location(f, e.line, e.key)}: not in {path} (this list of utterances to read is older than the "
                    "data: regenerate it, e.g. re-run collect-stats)" for f, e in listed if e.key not in keys)


def validate_loader_inputs(speech: Optional[PathLike], text: Optional[PathLike], *, check_audio: bool = True,
                           fs: Optional[int] = None, charset: Optional[Charset] = None,
                           allow_empty_text: bool = False, key_files: Sequence[PathLike] = (),
                           speech_type: str = "sound", channels: Optional[int] = None) -> Report:
    """Check the audio list and the transcripts one data loader reads together (ESPnet's
    `--train_data_path_and_name_and_type .../wav.scp,speech,sound` and `.../text,text,text`); raise DataError
    listing every problem.

    An input that is the wav.scp or text of a Kaldi data directory gets the whole directory validated
    (validate_data_dir); a table outside one gets the same checks on its own (sorted, unique keys, audio, text).
    Speech and text must hold the same utterances. `key_files` (ESPnet's shape files) list the utterances that will
    be read: each must be in both tables, and only those get their audio and transcript contents checked.
    `speech_type` is ESPnet's loader type of the speech input (sound or kaldi_ark: each entry is checked the way
    that loader reads it), `channels` the channel count the model expects.
    """
    segments = segments_beside(speech) if speech is not None else None
    if segments is not None:  # before anything else: the key comparison would call wav.scp stale
        raise DataError(f"{segments}: {SEGMENTS_UNSUPPORTED}")
    inputs = [(Path(p), role) for p, role in ((speech, "wav.scp"), (text, "text")) if p is not None]
    problems: List[str] = []
    report = Report()
    listed = _read_keys(key_files, problems)
    utterances = None if listed is None else {e.key for _, e in listed}
    covered = {p for p, role in inputs if p.name == role and is_data_dir(p.parent)}
    _validate_dirs(covered, utterances, check_audio, fs, charset, allow_empty_text, problems, report, speech_type,
                   channels)
    tables: List[Tuple[Path, Optional[List[Entry]]]] = []
    for path, role in inputs:
        if path in covered:
            tables.append((path, _read_quietly(path)))  # its problems were reported with its directory
            continue
        entries = _read(path, problems)
        tables.append((path, entries))
        report.utterances = max(report.utterances, len(entries or []))
        checked = _entries_to_check(entries, utterances)
        if role == "text":
            _check_text(path, checked, charset, allow_empty_text, problems, report.warnings)
        else:
            _check_audio(path, checked, check_audio, fs, problems, report.warnings, speech_type, channels)
    readable = [(p, e) for p, e in tables if e is not None]
    if len(readable) == 2 and not (len(covered) == 2 and len({p.parent for p in covered}) == 1):
        (speech_path, speech_entries), (text_path, text_entries) = readable
        _compare_keys(speech_path, speech_entries, text_path, text_entries, problems)
    for path, entries in readable:
        if listed is not None:
            _check_listed(listed, path, entries, problems)
    problems += [f"{path}: no utterances (an empty table)" for path, entries in readable if not entries]
    for path, entries in readable[:1]:  # the keys are compared above: one table's are enough
        problems += [f"{location(path, e.line, e.key)}: {UNSAFE_ID}" for e in entries if unsafe_id(e.key)]
    if problems:
        raise DataError(problems)
    for w in report.warnings:
        logging.warning(w)
    return report


UNSAFE_ID = ("the utterance id is not a safe file name (it holds '/' or '\\', or is '.' or '..'): ESPnet names "
             "files after utterance ids (attention plots: OUTPUT_DIR/att_ws/<id>.<epoch>ep.png), which would land "
             "outside the output directory; rename the utterance in every table of its data directory")


def unsafe_id(key: str) -> bool:
    """Whether an utterance id would not stay one file name inside a directory."""
    return "/" in key or "\\" in key or key in (".", "..")


def check_audio_list(path: PathLike, audio_type: str = "sound", *, check_audio: bool = True, fs: Optional[int] = None,
                     channels: Optional[int] = None, keys: Optional[Set[str]] = None) -> List[Entry]:
    """The audio list a decoder reads (its PATH,speech,TYPE input) on its own: read as every table is (read_table: a
    byte-order mark, DOS line endings, duplicate keys are errors, so no key reaches the output with a stray
    character), each entry of `keys` (default: all) checked the way `audio_type`'s loader (sound, kaldi_ark) reads
    it (_check_audio).
    Returns the entries; raises DataError listing every problem."""
    path = Path(path)
    segments = segments_beside(path)
    if segments is not None:  # the decoder would decode whole recordings under their ids
        raise DataError(f"{segments}: {SEGMENTS_UNSUPPORTED}")
    problems: List[str] = []
    warnings: List[str] = []
    try:
        entries = read_table(path)
    except DataError as e:
        raise DataError(e.problems) from None
    if not entries or (keys is not None and not keys):
        raise DataError(f"{path}: no utterances to decode (an empty {'--key_file' if keys is not None else 'list'})")
    if audio_type in ("sound", "kaldi_ark"):  # other types (features: npy, ...) get the table check only
        _check_audio(path, _entries_to_check(entries, keys), check_audio, fs, problems, warnings, audio_type,
                     channels)
    if problems:
        raise DataError(problems)
    for w in warnings:
        logging.warning(w)
    return entries
