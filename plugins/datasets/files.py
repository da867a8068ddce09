"""Finding data files, and downloading the known ones into a cache with a verified SHA-256.

Search order for a file name: the dataset's ``data_dir`` param, the ``data_dir`` the host passes
(``--data-dir``, else ``$TSBENCH_DATA_DIR``, else the spec's), ``$TSBENCH_DATA_DIR``, then the cache
(``$TSBENCH_CACHE_DIR`` or ``~/.cache/tsbench/data``). Each directory is searched with its sub-folders (a few
levels deep), so the usual layouts (``ETT-small/ETTh1.csv``, ``illness/national_illness.csv``) are found as they are.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tsbench_core.errors import DataError

DATA_ENV = "TSBENCH_DATA_DIR"
CACHE_ENV = "TSBENCH_CACHE_DIR"
SEARCH_DEPTH = 3  # sub-folder levels searched below each data directory
CHUNK = 1 << 16


@dataclass(frozen=True)
class RemoteFile:
    """Where a data file can be downloaded from, and the digests a correct copy may have."""

    filename: str
    urls: tuple[str, ...]
    sha256: tuple[str, ...] = ()  # empty: unknown, the file is accepted and its digest reported

    def accepts(self, digest: str) -> bool:
        return not self.sha256 or digest in self.sha256


def cache_dir() -> Path:
    """Where downloads go: ``$TSBENCH_CACHE_DIR`` or ``~/.cache/tsbench/data``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tsbench" / "data"


def search_dirs(*explicit: str | Path | None) -> list[Path]:
    """The directories to search, in order, without duplicates: explicit ones, ``$TSBENCH_DATA_DIR``, cache."""
    env = os.environ.get(DATA_ENV, "").strip()
    candidates = [*explicit, env or None, cache_dir()]
    seen: list[Path] = []
    for c in candidates:
        if c is None or str(c) == "":
            continue
        p = Path(c).expanduser()
        if p not in seen:
            seen.append(p)
    return seen


def find_in(directory: Path, filename: str, depth: int = SEARCH_DEPTH) -> Path | None:
    """``directory/filename`` or the first match in its sub-folders (breadth first, sorted, hidden skipped)."""
    level = [directory]
    for _ in range(depth + 1):
        following: list[Path] = []
        for d in level:
            candidate = d / filename
            if candidate.is_file():
                return candidate
            try:
                following.extend(sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")))
            except OSError:
                continue
        level = following
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _looked_in(dirs: Iterable[Path]) -> str:
    return ", ".join(str(d) + ("" if d.is_dir() else " (missing)") for d in dirs)


def locate(filename: str, dirs: list[Path], remote: RemoteFile | None, *, download: bool = True) -> Path:
    """The path of ``filename``: found in ``dirs`` or downloaded into the cache; otherwise one ``DataError``
    naming the file, where it looked and what to do."""
    for d in dirs:
        found = find_in(d, filename)
        if found is not None:
            return found
    where = _looked_in(dirs)
    if remote is None or not download:
        how = "" if remote is None else f" (automatic download is off; its source is {remote.urls[0]})"
        raise DataError(
            f"data file {filename} not found; looked in {where}{how}. Put the file in one of these folders, "
            f"or pass --data-dir / set {DATA_ENV} to the folder that holds it"
        )
    return fetch(remote, cache_dir(), looked_in=where)


def fetch(remote: RemoteFile, target_dir: Path, *, looked_in: str = "", timeout: float = 30.0) -> Path:
    """Download ``remote`` into ``target_dir`` (first URL that works), verify its digest, write atomically."""
    failures = []
    for url in remote.urls:
        try:
            return _download(url, remote, target_dir, timeout)
        except DataError:
            raise  # a checksum mismatch is not a network problem: do not try to hide it behind a mirror
        except (OSError, urllib.error.URLError, ValueError) as exc:
            failures.append(f"{url}: {exc}")
    place = f"; looked in {looked_in}" if looked_in else ""
    raise DataError(
        f"data file {remote.filename} not found{place}, and downloading it failed ({'; '.join(failures)}). "
        f"If this machine is offline, download it elsewhere from {remote.urls[0]} and put it in "
        f"{target_dir} or in a folder given by --data-dir / {DATA_ENV}"
    )


@contextlib.contextmanager
def _progress_bar(filename: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A transient rich download bar on stderr, yielding ``advance(n_bytes)``; no bar when another live display
    is active and this rich version cannot nest them."""
    from rich.console import Console  # imported here: only needed when something is downloaded
    from rich.errors import LiveError
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("download {task.description}", markup=False), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    progress = Progress(*columns, transient=True, console=Console(stderr=True))
    task = progress.add_task(filename, total=total)
    try:
        progress.start()
    except LiveError:
        yield lambda n: None
        return
    try:
        yield lambda n: progress.advance(task, n)
    finally:
        progress.stop()


def _download(url: str, remote: RemoteFile, target_dir: Path, timeout: float) -> Path:
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / remote.filename
    request = urllib.request.Request(url, headers={"User-Agent": "tsbench"})
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target_dir, prefix=f".{remote.filename}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            with _progress_bar(remote.filename, int(length) if length and length.isdigit() else None) as advance:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    advance(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if not remote.accepts(actual):
            raise DataError(
                f"checksum mismatch for {remote.filename} downloaded from {url}: sha256 {actual}, expected "
                f"{' or '.join(remote.sha256)}. The file was not kept; the source may have changed or the "
                "download was corrupted: retry, or get the file by hand and pass its folder with --data-dir"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
