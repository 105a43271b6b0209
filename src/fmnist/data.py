"""The prepared Fashion-MNIST file that training reads: one .npz of uint8 images, labels and a stratified
train/val split, written by fmnist.fetch.prepare; loaded whole, or refused as damaged with the fix.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fmnist.errors import DamagedFileError, damaged
from fmnist.files import atomic_write_bytes, move_aside

if TYPE_CHECKING:
    import numpy as np

# numpy is imported by the functions that load arrays, never at module level: the workflow uses
# check_prepared while parsing, where Snakemake alone may be installed.

CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

PREPARED_ARRAYS = [f"{split}_{kind}" for split in ("train", "val", "test") for kind in ("images", "labels", "index")]


def stratified_subset(labels: np.ndarray, size: int | float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a class-stratified subset: `size` items (int) or that fraction (float) of each class."""
    import numpy as np

    chosen = []
    classes = np.unique(labels)
    total = len(labels)
    for c in classes:
        idx = np.flatnonzero(labels == c)
        share = size * len(idx) / total if isinstance(size, int) else size * len(idx)
        k = int(round(share))
        chosen.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(chosen))


def check_prepared(path: Path | str, log: Callable[[str], None] = print) -> Path | None:
    """Move a prepared file that does not load whole aside (so `prepare` rebuilds it); return where it went.

    A file that loaded is remembered by size and mtime in a stamp beside it, so a repeated check costs a stat.
    """
    path = Path(path)
    stamp_path = path.with_name(f".{path.name}.verified")
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    key = f"{st.st_size} {st.st_mtime_ns}"
    try:
        if stamp_path.read_text() == key:
            return None
    except OSError:
        pass
    try:
        check_prepared_whole(path)  # the standard library only: this runs while the workflow parses
    except DamagedFileError as exc:
        aside = move_aside(path, "corrupt")
        log(f"[fmnist] {path}: {exc.problems[0][1]}; moved to {aside.name}, it will be prepared again")
        return aside
    atomic_write_bytes(stamp_path, key.encode())
    return None


def load_prepared(path: Path | str) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays of a prepared file and its metadata; a damaged file raises DamagedFileError."""
    import numpy as np

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k != "meta"}
            meta = json.loads(str(npz["meta"]))
        missing = [k for k in PREPARED_ARRAYS if k not in arrays]
        if missing:
            raise ValueError(f"lacks the array(s) {', '.join(missing)}")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise _damaged_prepared(path, exc) from None
    return arrays, meta


def check_prepared_whole(path: Path | str) -> None:
    """Raise DamagedFileError unless `path` is a whole prepared file, reading it with the standard library.

    The parse-time twin of load_prepared (which needs numpy): every member of the .npz archive is
    read and its CRC-32 checked, and every array load_prepared asks for must be there. That catches
    what load_prepared would (random bytes, truncation, an empty file, a missing array); a .npy
    header damaged with its CRC intact is left to load_prepared in the job.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as npz:
            bad = npz.testzip()
            if bad is not None:
                raise ValueError(f"member {bad} fails its CRC-32 check")
            names = {n.removesuffix(".npy") for n in npz.namelist()}
        missing = [k for k in [*PREPARED_ARRAYS, "meta"] if k not in names]
        if missing:
            raise ValueError(f"lacks the array(s) {', '.join(missing)}")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise _damaged_prepared(path, exc) from None


def _damaged_prepared(path: Path, exc: BaseException) -> DamagedFileError:
    problem = f"not a complete prepared file ({str(exc).strip() or type(exc).__name__})"
    if isinstance(exc, FileNotFoundError):
        problem = "it is missing"
    return damaged(path, problem, "prepares it again")
