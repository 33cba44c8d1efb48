"""Speech for the synthetic corpus: eSpeak NG through ctypes, then resampling, room, level and noise.

Why ctypes on the `espeakng-loader` wheel: it ships `libespeak-ng.so` and its data, so no system package is needed,
and synchronous synthesis into a callback runs several hundred times faster than real time (~7 ms for 3 s).

Why the library is re-loaded for every utterance: eSpeak NG keeps synthesiser state in C statics (pitch flutter
phase, wave generator state) that survive `espeak_Terminate`, so the same call gives slightly different samples
depending on what was spoken before. Unloading the library (`dlclose`) and loading it again resets every static.
Two random generators are seeded before each utterance too: eSpeak's own (seeded from the clock otherwise) and
libc's rand() (breathy variants use it). Together this makes each utterance a pure function of (text, voice, rate,
pitch, seed), whatever the order, process, job split or time of day. It costs about a millisecond.

Why the post-processing: synthetic speech is too clean. Each utterance gets random leading/trailing silence, a
random level, additive white/pink/brown noise at a random SNR, and (for the "other" condition) a synthetic room
reverberation. All randomness comes from a numpy Generator seeded per utterance.
"""
from __future__ import annotations

import ctypes
import logging
import os
import threading
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

SAMPLE_RATE = 16000
ESPEAK_SAMPLE_RATE = 22050

# espeak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_EE_OK = 0

# int (*t_espeak_callback)(short *wav, int numsamples, espeak_EVENT *events)
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

logger = logging.getLogger(__name__)


class ESpeakError(RuntimeError):
    """eSpeak NG could not be loaded, initialised or asked to speak."""


def _library_paths() -> Tuple[str, str]:
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - install_requires has it
        raise ESpeakError("the corpus generator needs `pip install espeakng-loader`") from e
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


_LIBC: Optional[ctypes.CDLL] = None


def _libc_srand(seed: int) -> None:
    """Seed the C library's rand(), which eSpeak's breath-noise generator uses (a process-wide side effect; nothing
    else here depends on libc rand)."""
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None)
        _LIBC.srand.argtypes = [ctypes.c_uint]
    _LIBC.srand(seed)


def _is_mapped(path: str) -> bool:
    """Whether a shared object is still mapped into this process (Linux only; False elsewhere)."""
    try:
        real = os.path.realpath(path)
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            return any(real in line for line in f)
    except OSError:
        return False


class ESpeakNG:
    """A ctypes binding of libespeak-ng in synchronous mode. Use one instance per process (`engine()`)."""

    def __init__(self, library_path: Optional[str] = None, data_path: Optional[str] = None) -> None:
        default_lib, default_data = _library_paths() if library_path is None or data_path is None else ("", "")
        self.library_path = library_path or default_lib
        self.data_path = data_path or default_data
        self._lock = threading.Lock()
        self._chunks: List[np.ndarray] = []
        # Keep a reference: the C library calls this pointer, and a collected ctypes callback would crash it.
        self._callback = _SYNTH_CALLBACK(self._on_samples)
        self._checked_unload = False
        self.version = self._query_version()

    # ---------------------------------------------------------------------------------------------------------
    def _on_samples(self, wav, numsamples: int, events) -> int:  # noqa: ANN001 (ctypes types)
        if wav and numsamples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0  # 0 = continue synthesis

    def _load(self) -> ctypes.CDLL:
        try:
            lib = ctypes.CDLL(self.library_path)
        except OSError as e:
            raise ESpeakError(f"cannot load {self.library_path}: {e}") from e
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode("utf-8"), _ESPEAK_INITIALIZE_DONT_EXIT
        )
        if rate != ESPEAK_SAMPLE_RATE:
            self._unload(lib)
            raise ESpeakError(f"espeak_Initialize returned {rate} (expected sample rate {ESPEAK_SAMPLE_RATE})")
        lib.espeak_SetSynthCallback(self._callback)
        return lib

    def _unload(self, lib: ctypes.CDLL) -> None:
        import _ctypes

        lib.espeak_Terminate()
        _ctypes.dlclose(lib._handle)
        if not self._checked_unload:
            self._checked_unload = True
            if _is_mapped(self.library_path):
                logger.warning(
                    "libespeak-ng stays loaded after dlclose (another module holds it): its internal state is not "
                    "reset between utterances, so audio is not bit-reproducible across runs"
                )

    def _query_version(self) -> str:
        with self._lock:
            lib = self._load()
            try:
                return lib.espeak_Info(None).decode("utf-8", "replace").strip()
            finally:
                self._unload(lib)

    def check_voice(self, voice: str) -> None:
        """Raise ESpeakError unless `voice` ("accent" or "accent+variant") exists in the data."""
        accent, _, variant = voice.partition("+")
        if variant and not os.path.isfile(os.path.join(self.data_path, "voices", "!v", variant)):
            raise ESpeakError(f"eSpeak NG voice variant {variant!r} not found in {self.data_path}/voices/!v")
        with self._lock:
            lib = self._load()
            try:
                err = lib.espeak_SetVoiceByName(accent.encode("utf-8"))
            finally:
                self._unload(lib)
        if err != _EE_OK:
            raise ESpeakError(f"eSpeak NG voice {accent!r} not found (error {err})")

    def phonemes(self, text: str, voice: str = "en-us") -> str:
        """eSpeak's IPA transcription of `text` (espeak_TextToPhonemes), e.g. to check that two spellings sound the
        same. Clauses are joined with spaces."""
        with self._lock:
            lib = self._load()
            try:
                lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
                lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
                if lib.espeak_SetVoiceByName(voice.encode("utf-8")) != _EE_OK:
                    raise ESpeakError(f"eSpeak NG voice {voice!r} not found")
                buf = ctypes.create_string_buffer(text.encode("utf-8"))
                ptr = ctypes.c_char_p(ctypes.addressof(buf))
                parts = []
                while ptr.value:  # the call advances ptr clause by clause (NULL at the end)
                    out = lib.espeak_TextToPhonemes(ctypes.byref(ptr), _ESPEAK_CHARS_UTF8, 0x02)  # bit 1: IPA
                    parts.append((out or b"").decode("utf-8", "replace").strip())
            finally:
                self._unload(lib)
        return " ".join(p for p in parts if p)

    def synthesize(self, text: str, voice: str, rate: int = 175, pitch: int = 50, pitch_range: int = 50,
                   volume: int = 50, seed: int = 0) -> np.ndarray:
        """int16 samples at 22050 Hz. volume 50 (of eSpeak's 0-200 scale, default 100) keeps loud variants from
        clipping; the level is set later anyway. `seed` seeds eSpeak's own random generator, which it otherwise
        seeds from the clock (so runs in different seconds would differ)."""
        data = text.encode("utf-8") + b"\0"
        with self._lock:
            lib = self._load()
            try:
                self._chunks = []
                lib.espeak_ng_SetRandSeed(int(seed) % (2 ** 31))
                _libc_srand(int(seed) % (2 ** 31))  # breathy variants draw noise from libc rand()
                err = lib.espeak_SetVoiceByName(voice.encode("utf-8"))
                if err != _EE_OK:
                    raise ESpeakError(f"eSpeak NG voice {voice!r} not found (error {err})")
                for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range),
                                     (_PARAM_VOLUME, volume)):
                    lib.espeak_SetParameter(param, int(value), 0)
                err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
                if err != _EE_OK:
                    raise ESpeakError(f"espeak_Synth failed with error {err} for {text!r}")
                lib.espeak_Synchronize()
                chunks, self._chunks = self._chunks, []
            finally:
                self._unload(lib)
        if not chunks:
            raise ESpeakError(f"eSpeak NG produced no audio for {text!r} with voice {voice!r}")
        return np.concatenate(chunks)


_ENGINE: Optional[ESpeakNG] = None
_ENGINE_PID: Optional[int] = None


def engine() -> ESpeakNG:
    """The process-wide engine (re-created in a forked child, which must not share the parent's lock)."""
    global _ENGINE, _ENGINE_PID
    if _ENGINE is None or _ENGINE_PID != os.getpid():
        _ENGINE, _ENGINE_PID = ESpeakNG(), os.getpid()
    return _ENGINE


# -------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Acoustics:
    """Recording conditions of a set: ranges the per-utterance values are drawn from."""

    snr_db: Tuple[float, float] = (12.0, 35.0)
    peak_dbfs: Tuple[float, float] = (-18.0, -2.0)
    pad_seconds: Tuple[float, float] = (0.1, 0.4)
    reverb_prob: float = 0.0
    rt60_seconds: Tuple[float, float] = (0.2, 0.6)
    noise_colors: Tuple[str, ...] = ("white", "pink", "brown")


CLEAN = Acoustics()
OTHER = Acoustics(snr_db=(0.0, 12.0), reverb_prob=0.7)


_RESAMPLE_UP, _RESAMPLE_DOWN = 320, 441  # 16000 / 22050
_RESAMPLE_FILTER: Optional[np.ndarray] = None


def resample_to_16k(samples: np.ndarray) -> np.ndarray:
    """22050 Hz -> 16000 Hz with scipy's polyphase resampler; float64 in, float64 out. The low-pass filter is the
    one `resample_poly` designs by default (Kaiser, beta 5), designed once: designing it dominated the cost."""
    from scipy.signal import firwin, resample_poly

    global _RESAMPLE_FILTER
    if _RESAMPLE_FILTER is None:
        max_rate = max(_RESAMPLE_UP, _RESAMPLE_DOWN)
        _RESAMPLE_FILTER = firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    return resample_poly(samples, _RESAMPLE_UP, _RESAMPLE_DOWN, window=_RESAMPLE_FILTER)


def colored_noise(rng: np.random.Generator, n: int, color: str) -> np.ndarray:
    """Unit-power noise with a 1/f^alpha spectrum: white (0), pink (1), brown (2)."""
    alpha = {"white": 0.0, "pink": 1.0, "brown": 2.0}[color]
    if alpha == 0.0 or n < 4:
        noise = rng.standard_normal(n)
    else:
        from scipy.fft import irfft, next_fast_len, rfft

        m = next_fast_len(n, real=True)  # an FFT size with small prime factors: lengths here are arbitrary
        spec = rfft(rng.standard_normal(m))
        f = np.maximum(np.arange(len(spec)) * (SAMPLE_RATE / m), 20.0)  # flat below 20 Hz (no DC drift)
        noise = irfft(spec * f ** (-alpha / 2.0), m)[:n]
    return noise / max(np.sqrt(np.mean(noise ** 2)), 1e-12)


def room_impulse_response(rng: np.random.Generator, rt60: float) -> np.ndarray:
    """A synthetic room: direct path plus exponentially decaying noise (-60 dB after rt60 seconds)."""
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60) * 0.3
    tail[: int(0.002 * SAMPLE_RATE)] = 0.0  # first reflections arrive after ~2 ms
    rir = tail
    rir[0] = 1.0
    return rir / np.sqrt(np.sum(rir ** 2))


def degrade(speech: np.ndarray, rng: np.random.Generator, acoustics: Acoustics) -> np.ndarray:
    """Clean 16 kHz speech (float) -> what a microphone in `acoustics` records (float32 in [-1, 1))."""
    x = np.asarray(speech, dtype=np.float64)
    if acoustics.reverb_prob > 0.0 and rng.random() < acoustics.reverb_prob:
        from scipy.signal import oaconvolve

        rir = room_impulse_response(rng, rng.uniform(*acoustics.rt60_seconds))
        x = oaconvolve(x, rir)[: len(x) + len(rir) // 2]
    lead = int(rng.uniform(*acoustics.pad_seconds) * SAMPLE_RATE)
    trail = int(rng.uniform(*acoustics.pad_seconds) * SAMPLE_RATE)
    peak = np.max(np.abs(x)) if len(x) else 0.0
    x = x * (10.0 ** (rng.uniform(*acoustics.peak_dbfs) / 20.0) / max(peak, 1e-9))
    speech_power = np.mean(x ** 2) if len(x) else 0.0
    x = np.concatenate([np.zeros(lead), x, np.zeros(trail)])
    color = acoustics.noise_colors[int(rng.integers(len(acoustics.noise_colors)))]
    snr = rng.uniform(*acoustics.snr_db)
    x = x + colored_noise(rng, len(x), color) * np.sqrt(speech_power / 10.0 ** (snr / 10.0))
    return np.clip(x, -1.0, 32767.0 / 32768.0).astype(np.float32)


def synthesize_clean(text: str, voice: str, rate: int, pitch: int, pitch_range: int, seed: int = 0) -> np.ndarray:
    """eSpeak output for `text` (spoken lower-case: eSpeak may spell out all-capital words), float64 at 16 kHz."""
    samples = engine().synthesize(text.lower(), voice, rate=rate, pitch=pitch, pitch_range=pitch_range, seed=seed)
    return resample_to_16k(samples.astype(np.float64) / 32768.0)


def render(text: str, voice: str, rate: int, pitch: int, pitch_range: int, rng: np.random.Generator,
           acoustics: Acoustics = CLEAN) -> np.ndarray:
    """One corpus utterance: synthesised, resampled to 16 kHz, degraded. float32, mono. `rng` drives everything
    random, eSpeak's generators included."""
    seed = int(rng.integers(2 ** 31))
    return degrade(synthesize_clean(text, voice, rate, pitch, pitch_range, seed=seed), rng, acoustics)
