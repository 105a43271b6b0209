"""Download and prepare: real files from the Debian package, served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from fmnist import data, fetch, files
from fmnist.errors import COMMAND_ENV, DamagedFileError


@pytest.fixture(scope="module")
def http_root(tmp_path_factory, dataset_dir):
    """A directory tree served over HTTP: good/ (real .gz files), truncated/ (cut in half), corrupt/ (wrong payload)."""
    root = tmp_path_factory.mktemp("www")
    for sub in ("good", "truncated", "corrupt"):
        (root / sub).mkdir()
    for name in fetch.FILES:
        gz = (dataset_dir / f"{name}.gz").read_bytes()
        (root / "good" / f"{name}.gz").write_bytes(gz)
        (root / "truncated" / f"{name}.gz").write_bytes(gz[: len(gz) // 2])
        (root / "corrupt" / f"{name}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x01" * 64))
    return root


@pytest.fixture(scope="module")
def server(http_root):
    handler = functools.partial(QuietHandler, directory=str(http_root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, fmt, *args):  # keep pytest output clean, but remember what was asked
        QuietHandler.requests.append(self.path)


def test_fetch_from_local_directory(tmp_path, dataset_dir):
    dest = tmp_path / "train-labels-idx1-ubyte"
    used = fetch.fetch("train-labels-idx1-ubyte", [str(dataset_dir)], dest, log=lambda m: None)
    assert used == str(dataset_dir)
    assert files.sha256_file(dest) == fetch.FILES["train-labels-idx1-ubyte"]
    assert not list(tmp_path.glob("*.part"))  # atomic write leaves no temporary file


def test_fetch_over_http_after_failing_sources(tmp_path, server):
    messages = []
    dest = tmp_path / "t10k-labels-idx1-ubyte"
    sources = [str(tmp_path / "missing-dir"), f"{server}/truncated", f"{server}/corrupt", f"{server}/good"]
    used = fetch.fetch("t10k-labels-idx1-ubyte", sources, dest, log=messages.append)
    assert used == f"{server}/good"
    assert files.sha256_file(dest) == fetch.FILES["t10k-labels-idx1-ubyte"]
    failures = [m for m in messages if "failed" in m]
    assert len(failures) == 3
    assert "no such directory" in failures[0]
    assert "truncated or corrupt gzip" in failures[1]
    assert "SHA-256" in failures[2]


def test_every_source_failing_lists_each_with_its_reason(tmp_path, server):
    sources = [f"{server}/corrupt", f"{server}/nothing-here", "http://127.0.0.1:9/unreachable"]
    with pytest.raises(fetch.DownloadError) as err:
        fetch.fetch("train-labels-idx1-ubyte", sources, tmp_path / "x", timeout=5, log=lambda m: None)
    msg = str(err.value)
    for s in sources:
        assert s in msg
    assert "SHA-256" in msg and "HTTP 404" in msg and "cannot reach" in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert not (tmp_path / "x").exists()


def test_corrupt_cached_file_is_moved_aside_not_deleted(tmp_path, raw_dir):
    cache = tmp_path / "raw"
    shutil.copytree(raw_dir, cache)
    assert fetch.check_cached(cache, log=lambda m: None) == []
    target = cache / "t10k-labels-idx1-ubyte"
    original = target.read_bytes()
    target.write_bytes(original[:-10] + b"\xff" * 10)
    moved = fetch.check_cached(cache, log=lambda m: None)
    assert len(moved) == 1 and not target.exists()
    assert moved[0].read_bytes() == original[:-10] + b"\xff" * 10
    assert fetch.check_cached(cache, log=lambda m: None) == []  # the others are still verified


def test_prepare_is_stratified_and_disjoint(tmp_path, raw_dir):
    out = tmp_path / "p.npz"
    meta = fetch.prepare(raw_dir, out, val_fraction=0.2, split_seed=3, train_limit=5000, test_limit=1000)
    arrays, meta2 = data.load_prepared(out)
    assert meta == meta2
    assert (meta["n_train"], meta["n_val"], meta["n_test"]) == (4000, 1000, 1000)
    assert arrays["train_images"].dtype == np.uint8 and arrays["train_images"].shape == (4000, 28, 28)
    assert not set(arrays["train_index"]) & set(arrays["val_index"])
    for split in ("train", "val", "test"):
        counts = np.bincount(arrays[f"{split}_labels"], minlength=10)
        assert counts.max() - counts.min() <= 1, (split, counts)
    # the same seed gives the same split; another seed another one
    fetch.prepare(raw_dir, tmp_path / "q.npz", val_fraction=0.2, split_seed=3, train_limit=5000, test_limit=1000)
    fetch.prepare(raw_dir, tmp_path / "r.npz", val_fraction=0.2, split_seed=4, train_limit=5000, test_limit=1000)
    assert np.array_equal(data.load_prepared(tmp_path / "q.npz")[0]["val_index"], arrays["val_index"])
    assert not np.array_equal(data.load_prepared(tmp_path / "r.npz")[0]["val_index"], arrays["val_index"])


def test_full_prepare_keeps_every_image(tmp_path, raw_dir):
    meta = fetch.prepare(raw_dir, tmp_path / "full.npz", val_fraction=0.1, split_seed=0)
    assert (meta["n_train"], meta["n_val"], meta["n_test"]) == (54000, 6000, 10000)


def test_read_idx_rejects_a_short_file(tmp_path, raw_dir):
    bad = tmp_path / "short"
    bad.write_bytes((raw_dir / "t10k-labels-idx1-ubyte").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header says"):
        fetch.read_idx(bad)


def test_canonical_sources_are_configured():
    from fmnist import config

    sources = config.validate({"studies": {"s": {"models": ["standard_cnn"]}}})["data"]["sources"]
    assert sources[0] == "/usr/share/datasets/fashion-mnist"
    assert any(s.startswith("http") for s in sources)
    assert Path(sources[0]).is_absolute()


def _flip_byte_mid_member(path: Path) -> None:
    """Flip one byte inside the largest member's stored data: the archive still opens, its CRC fails."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.compress_size)
    raw = bytearray(path.read_bytes())
    raw[info.header_offset + 30 + len(info.filename) + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _drop_member(path: Path, name: str = "val_index.npy") -> None:
    import zipfile

    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i) for i in z.infolist() if i.filename != name}
    with zipfile.ZipFile(path, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b""),
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
        lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
        _flip_byte_mid_member,
        _drop_member,
    ],
    ids=["empty", "truncated", "random_bytes", "flipped_byte", "missing_array"],
)
def test_parse_time_check_of_the_prepared_file_needs_no_numpy_and_agrees_with_loading(
    tmp_path, prepared_small, damage, monkeypatch
):
    # check_prepared runs while the workflow parses (Snakemake alone may be installed there), so
    # it checks with zipfile; whatever it passes, load_prepared must load, and what it rejects,
    # load_prepared rejects too.
    path = tmp_path / "fashion_mnist.npz"
    shutil.copy(prepared_small, path)
    data.check_prepared_whole(path)  # a whole file passes
    damage(path)
    with pytest.raises(DamagedFileError, match="not a complete prepared file"):
        data.check_prepared_whole(path)
    with pytest.raises(DamagedFileError, match="not a complete prepared file") as exc:
        data.load_prepared(path)
    # the fix removes the file and runs the workflow again, in the invocation the user is in
    monkeypatch.setenv(COMMAND_ENV, "snakemake --configfile my.yaml")
    assert exc.value.fix.startswith(f"rm -f {path} && snakemake (the next run of the workflow prepares it")
    with pytest.raises(DamagedFileError) as exc:
        data.load_prepared(path)
    assert exc.value.fix.startswith(f"rm -f {path} && snakemake --configfile my.yaml (the next run")
    aside = data.check_prepared(path, log=lambda _m: None)
    assert aside is not None and aside.exists() and not path.exists()
