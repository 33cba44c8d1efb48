"""KenLM's `lmplz` and `build_binary`, for word n-grams on texts too big for the Python estimator (recipe/ngram.py),
e.g. LibriSpeech's 800M-word LM corpus: lmplz sorts its counts on disk in bounded memory (`-S`, `-T`).

Both estimate the same interpolated modified Kneser-Ney model (tests/test_kenlm.py compares them where lmplz is on
the PATH). As in ESPnet's asr.sh, lmplz runs with `--discount_fallback` (tiny or synthetic texts lack the counts of
counts a discount needs) and build_binary makes the file the decoder loads fast. KenLM is not on PyPI with its
programs; build them once (README "A word n-gram for big text"):

    git clone https://github.com/kpu/kenlm && cd kenlm && mkdir build && cd build
    cmake .. -DCMAKE_BUILD_TYPE=Release && make -j4 lmplz build_binary   # needs Boost, zlib: apt libboost-all-dev
    export PATH=$PWD/bin:$PATH
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

from espnet_bertkd.utils.fileio import atomic_open, tmp_name

PathLike = Union[str, Path]


class KenLMError(RuntimeError):
    """lmplz or build_binary failed; the message holds the command and the tail of its error output."""


@dataclass(frozen=True)
class KenLM:
    """Where the two programs are (build_binary is optional: without it the decoder reads the ARPA file)."""

    lmplz: str
    build_binary: Optional[str]


def find_kenlm(bin_dir: Optional[PathLike] = None) -> Optional[KenLM]:
    """lmplz (and build_binary) in `bin_dir`, else on the PATH; None when lmplz is not found."""
    path = None if bin_dir is None else str(bin_dir)
    lmplz = shutil.which("lmplz", path=path)
    if lmplz is None:
        return None
    return KenLM(lmplz, shutil.which("build_binary", path=path))


def _fail(cmd: Sequence[str], stderr: bytes) -> KenLMError:
    tail = "\n".join(stderr.decode("utf-8", "replace").strip().splitlines()[-5:])
    return KenLMError(f"{' '.join(cmd)} failed:\n{tail}")


def run_lmplz(kenlm: KenLM, sentences: Iterable[Sequence[str]], order: int, arpa: PathLike,
              memory: str = "20%", temp_dir: Optional[PathLike] = None) -> None:
    """Estimate an `order`-gram ARPA with lmplz from tokenised sentences (streamed to its stdin, one per line), written
    atomically to `arpa`. `memory` is lmplz's -S (its sort buffers: a share of RAM or a size such as 4G)."""
    arpa = Path(arpa)
    cmd: List[str] = [kenlm.lmplz, "-o", str(order), "--discount_fallback", "-S", memory,
                      "-T", str(temp_dir or arpa.parent)]
    with atomic_open(arpa, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE)
        err = b""
        try:
            assert proc.stdin is not None
            for words in sentences:
                proc.stdin.write((" ".join(words) + "\n").encode("utf-8"))
            proc.stdin.close()
        except BrokenPipeError:  # lmplz died early: its stderr says why
            pass
        finally:
            err = proc.stderr.read() if proc.stderr else b""
            proc.wait()
        if proc.returncode != 0:
            raise _fail(cmd, err)


def run_build_binary(kenlm: KenLM, arpa: PathLike, binary: PathLike) -> None:
    """KenLM's binary format of an ARPA file (probing, as ESPnet's `build_binary -s`), written atomically."""
    binary = Path(binary)
    tmp = tmp_name(binary)
    cmd = [str(kenlm.build_binary), "-s", str(arpa), str(tmp)]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            raise _fail(cmd, proc.stderr)
        tmp.replace(binary)
    finally:
        if tmp.exists():
            tmp.unlink()
