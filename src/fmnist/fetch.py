"""Fashion-MNIST's source files: fetch the four IDX files from ordered sources, verify them, and decode
them once into the prepared split file that training reads (fmnist.data).

Files are verified by the SHA-256 of their decompressed IDX payload (mirrors re-compress the
.gz files, so the .gz bytes differ between sources while the payload does not).

Only the download and prepare rules use this module; a training run reads the prepared file alone, so
this code is not part of a run's identity (fmnist.codeid).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from fmnist.data import CLASSES, stratified_subset
from fmnist.files import atomic_write_bytes, move_aside, sha256_file

if TYPE_CHECKING:
    import numpy as np

# numpy is imported by the functions that decode arrays, never at module level: the workflow uses
# FILES and check_cached while parsing, where Snakemake alone may be installed.

FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
"""IDX file name -> SHA-256 of its decompressed payload."""

VERIFIED_STAMP = ".verified.json"


class DownloadError(RuntimeError):
    """Every source failed for a file; the message lists each source and why."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https", "file", "ftp")


def decompress(data: bytes) -> bytes:
    """gunzip `data` if it is gzip; a truncated or corrupt stream raises ValueError."""
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"truncated or corrupt gzip data ({exc})") from None


def read_source(source: str, name: str, timeout: float = 60) -> bytes:
    """The decompressed bytes of `name` from one source: a directory or a base URL."""
    if is_url(source):
        url = f"{source.rstrip('/')}/{name}.gz"
        req = urllib.request.Request(url, headers={"User-Agent": "fmnist-workflow"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                expected_len = resp.headers.get("Content-Length")
                data = resp.read()
        except urllib.error.HTTPError as exc:
            raise OSError(f"HTTP {exc.code} {exc.reason} for {url}") from None
        except urllib.error.URLError as exc:
            raise OSError(f"cannot reach {url}: {exc.reason}") from None
        if expected_len is not None and len(data) != int(expected_len):
            raise ValueError(f"truncated download: {len(data)} of {expected_len} bytes from {url}")
        return decompress(data)
    directory = Path(source).expanduser()
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return decompress(candidate.read_bytes())
    if not directory.is_dir():
        raise FileNotFoundError(f"no such directory {directory}")
    raise FileNotFoundError(f"neither {name}.gz nor {name} in {directory}")


def fetch(
    name: str,
    sources: Iterable[str],
    dest: Path | str,
    timeout: float = 60,
    log: Callable[[str], None] = print,
) -> str:
    """Fetch IDX file `name` into `dest` from the first source whose payload verifies; return that source."""
    if name not in FILES:
        raise ValueError(f"unknown Fashion-MNIST file {name!r}; known: {', '.join(FILES)}")
    expected = FILES[name]
    failures: list[str] = []
    for source in sources:
        try:
            payload = read_source(source, name, timeout)
            digest = sha256_bytes(payload)
            if digest != expected:
                raise ValueError(
                    f"SHA-256 of the payload is {digest}, expected {expected} (corrupt or wrong file)"
                )
        except Exception as exc:  # every failure is reported, then the next source is tried
            reason = str(exc) or type(exc).__name__
            failures.append(f"{source}: {reason}")
            log(f"[download] {name}: {source} failed: {reason}")
            continue
        atomic_write_bytes(dest, payload)
        log(f"[download] {name}: verified {len(payload)} bytes from {source}")
        return source
    raise DownloadError(
        f"could not obtain a verified copy of {name} from any source:\n  - "
        + "\n  - ".join(failures or ["(no sources configured)"])
        + "\nFix: install the Debian package dataset-fashion-mnist "
        "(apt-get install dataset-fashion-mnist), put the four IDX .gz files in a directory "
        "listed under data.sources, or give a reachable mirror URL there."
    )


def fetch_logged(name: str, sources: Iterable[str], dest: Path | str, log_path: Path | str,
                 timeout: float = 60) -> str:
    """The download rule's job: `fetch`, each source's outcome and a failure's message in its log."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as fh:

        def say(line: str) -> None:
            print(line, file=fh)

        try:
            return fetch(name, sources, dest, timeout=timeout, log=say)
        except DownloadError as exc:
            say(str(exc))
            raise


def check_cached(
    raw_dir: Path | str,
    log: Callable[[str], None] = print,
    refetch_from: Iterable[str] | None = None,
    timeout: float = 60,
) -> list[Path]:
    """Verify the IDX files already in `raw_dir`; move corrupt ones aside and fetch them again.

    Verified files are remembered by size and mtime in a stamp file, so repeated checks cost a stat.
    A corrupt file is renamed to `<name>.corrupt-<time>` (never deleted) and, with `refetch_from`,
    fetched again at once; if that fails too it stays missing and the download rule reports why.
    Returns the paths that were moved aside.
    """
    raw_dir = Path(raw_dir)
    stamp_path = raw_dir / VERIFIED_STAMP
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        stamp = {}
    moved, changed = [], False
    for name, expected in FILES.items():
        path = raw_dir / name
        if not path.is_file():
            if stamp.pop(name, None) is not None:
                changed = True
            continue
        st = path.stat()
        key = [st.st_size, st.st_mtime_ns]
        if stamp.get(name) == key:
            continue
        try:
            digest, problem = sha256_file(path), "failed its SHA-256 check"
        except OSError as exc:  # unreadable: as useless as a corrupt copy, and handled the same way
            digest, problem = "", f"cannot be read ({exc.strerror or exc})"
        if digest == expected:
            stamp[name], changed = key, True
            continue
        aside = move_aside(path, "corrupt")
        stamp.pop(name, None)
        changed = True
        moved.append(aside)
        log(f"[fmnist] {path} {problem}; moved to {aside.name}, fetching it again")
        if refetch_from is not None:
            try:
                fetch(name, refetch_from, path, timeout=timeout, log=log)
            except DownloadError as exc:
                log(f"[fmnist] {exc}")
                continue
            st = path.stat()
            stamp[name] = [st.st_size, st.st_mtime_ns]
    if changed and raw_dir.is_dir():
        atomic_write_bytes(stamp_path, json.dumps(stamp, indent=1).encode())
    return moved


def read_idx(path: Path | str) -> np.ndarray:
    """Decode an IDX file (uint8 payload) into an array of its declared shape."""
    import numpy as np

    data = Path(path).read_bytes()
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # 0x08: unsigned byte
        raise ValueError(f"{path}: not a uint8 IDX file (magic {magic:#x})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise ValueError(f"{path}: {len(data) - offset} bytes of data, header says {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def prepare(
    raw_dir: Path | str,
    out: Path | str,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> dict:
    """Decode the IDX files once into `out` (.npz: uint8 images, labels, a stratified train/val split)."""
    import numpy as np

    raw_dir = Path(raw_dir)
    train_x = read_idx(raw_dir / "train-images-idx3-ubyte")
    train_y = read_idx(raw_dir / "train-labels-idx1-ubyte")
    test_x = read_idx(raw_dir / "t10k-images-idx3-ubyte")
    test_y = read_idx(raw_dir / "t10k-labels-idx1-ubyte")
    rng = np.random.default_rng(split_seed)
    pool = np.arange(len(train_y))
    if train_limit:
        pool = stratified_subset(train_y, int(train_limit), rng)
    val_pos = stratified_subset(train_y[pool], float(val_fraction), rng)
    val_idx = pool[val_pos]
    train_idx = np.setdiff1d(pool, val_idx)
    test_idx = np.arange(len(test_y))
    if test_limit:
        test_idx = stratified_subset(test_y, int(test_limit), rng)
    meta = {
        "val_fraction": val_fraction,
        "split_seed": split_seed,
        "train_limit": train_limit,
        "test_limit": test_limit,
        "n_train": int(len(train_idx)),
        "n_val": int(len(val_idx)),
        "n_test": int(len(test_idx)),
        "classes": CLASSES,
        "sha256": FILES,
    }
    arrays = {
        "train_images": train_x[train_idx], "train_labels": train_y[train_idx],
        "val_images": train_x[val_idx], "val_labels": train_y[val_idx],
        "test_images": test_x[test_idx], "test_labels": test_y[test_idx],
        "train_index": train_idx, "val_index": val_idx, "test_index": test_idx,
        "meta": np.array(json.dumps(meta)),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out)
    return meta
