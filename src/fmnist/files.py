"""Files written whole, hashed, and moved aside when damaged: the standard library only."""

from __future__ import annotations

import hashlib
import os
import shlex
import tempfile
import time
from pathlib import Path

from fmnist.errors import DamagedFileError


def sha256_file(path: Path | str) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write via a temporary file in the same directory and rename, so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def move_aside(path: Path, why: str) -> Path:
    """Rename `path` to `<name>.<why>-<time>` beside it (kept for inspection, never deleted)."""
    aside = path.with_name(f"{path.name}.{why}-{time.strftime('%Y%m%dT%H%M%S')}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.{why}-{time.strftime('%Y%m%dT%H%M%S')}-{n}")
    try:
        path.rename(aside)
    except OSError as exc:
        raise DamagedFileError(
            [(path, f"is damaged and cannot be moved aside ({exc.strerror or exc})")],
            f"rm -f {shlex.quote(str(path))}",
        ) from None
    return aside
