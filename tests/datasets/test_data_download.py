"""Locating and downloading data files, with file:// URLs and a local HTTP server (no internet)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugins.datasets import files
from plugins.datasets.files import RemoteFile
from plugins.datasets.standard import FileDataset
from tsbench_core.data import Windows
from tsbench_core.errors import DataError

CONTENT = "date,a,OT\n" + "".join(f"2020-01-01 {h:02d}:00:00,{h},{h * 2}\n" for h in range(24))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "remote"
    folder.mkdir()
    (folder / "tiny.csv").write_text(CONTENT)
    return folder


@pytest.fixture
def http_root(source: Path) -> Iterator[str]:
    handler = functools.partial(QuietHandler, directory=str(source))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        pass


def digest() -> str:
    return hashlib.sha256(CONTENT.encode()).hexdigest()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_over_http_is_verified_and_cached(http_root: str, isolated_cache: Path, tmp_path: Path) -> None:
    remote = RemoteFile("tiny.csv", (f"{http_root}/tiny.csv",), (digest(),))
    path = files.locate("tiny.csv", [tmp_path / "empty"], remote)
    assert path == isolated_cache / "tiny.csv"
    assert path.read_text() == CONTENT
    assert [p.name for p in isolated_cache.iterdir()] == ["tiny.csv"]  # no temporary file left behind
    # found in the cache the second time: no server needed
    assert files.locate("tiny.csv", files.search_dirs(None), RemoteFile("tiny.csv", ("http://unused/",))) == path


def test_download_falls_back_to_the_mirror(source: Path, isolated_cache: Path) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/tiny.csv"
    remote = RemoteFile("tiny.csv", (dead, (source / "tiny.csv").as_uri()), (digest(),))
    assert files.fetch(remote, isolated_cache).read_text() == CONTENT


def test_checksum_mismatch_keeps_nothing(source: Path, isolated_cache: Path) -> None:
    remote = RemoteFile("tiny.csv", ((source / "tiny.csv").as_uri(),), ("0" * 64,))
    with pytest.raises(DataError, match=rf"checksum mismatch for tiny.csv downloaded from file://.*{digest()}"):
        files.locate("tiny.csv", [], remote)
    assert not any(isolated_cache.iterdir())


def test_unknown_digest_is_accepted(source: Path, isolated_cache: Path) -> None:
    remote = RemoteFile("tiny.csv", ((source / "tiny.csv").as_uri(),))
    assert files.locate("tiny.csv", [], remote).read_text() == CONTENT


def test_offline_gives_one_clear_error(tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TSBENCH_DATA_DIR", raising=False)  # the Makefile sets it; this test lists the folders
    remote = RemoteFile("ETTx.csv", (f"http://127.0.0.1:{closed_port()}/ETTx.csv",))
    with pytest.raises(DataError) as info:
        files.locate("ETTx.csv", files.search_dirs(tmp_path), remote)
    message = str(info.value)
    assert message.startswith(f"data file ETTx.csv not found; looked in {tmp_path}, {isolated_cache} (missing)")
    assert "downloading it failed" in message and "If this machine is offline" in message
    assert "--data-dir" in message


def test_download_off(tmp_path: Path) -> None:
    remote = RemoteFile("ETTx.csv", ("http://example.invalid/ETTx.csv",))
    with pytest.raises(DataError, match=r"not found; looked in .*automatic download is off"):
        files.locate("ETTx.csv", [tmp_path], remote, download=False)


def test_search_order_and_sub_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, env = tmp_path / "first", tmp_path / "env"
    (env / "deep" / "er").mkdir(parents=True)
    (env / "deep" / "er" / "x.csv").write_text("env")
    monkeypatch.setenv("TSBENCH_DATA_DIR", str(env))
    dirs = files.search_dirs(first, None)
    assert dirs == [first, env, files.cache_dir()]
    assert files.locate("x.csv", dirs, None).read_text() == "env"
    (first).mkdir()
    (first / "x.csv").write_text("first")
    assert files.locate("x.csv", dirs, None).read_text() == "first"


def test_named_dataset_downloads_when_missing(http_root: str, tmp_path: Path) -> None:
    remote = RemoteFile("tiny.csv", (f"{http_root}/tiny.csv",), (digest(),))
    plugin = FileDataset("tiny", "test dataset", "tiny.csv", "ratio", "h", 2, remote)
    splits = plugin.load(plugin.params_model(data_dir=str(tmp_path / "nothing")), Windows(4, 2, 2), None)
    assert splits.info["sha256"] == digest() and splits.info["sha256_known"]
    assert len(splits.test) == (int(24 * 0.2) + 4) - (4 + 2) + 1


def test_download_without_a_bar_when_live_display_is_busy(source: Path, isolated_cache: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.errors import LiveError
    from rich.progress import Progress

    def busy(self) -> None:
        raise LiveError("Only one live display may be active at once")

    monkeypatch.setattr(Progress, "start", busy)
    remote = RemoteFile("tiny.csv", ((source / "tiny.csv").as_uri(),), (digest(),))
    assert files.fetch(remote, isolated_cache).read_text() == CONTENT
