"""Downloading the datasets whose licence allows it: checksum-verified, resumable, with a progress bar.

Each registered dataset with a :class:`~ddrank.data.base.DownloadPlan` (CIFAR-10/100, MNIST,
Fashion-MNIST, KMNIST, SVHN, Tiny ImageNet) lists its files with the URLs and MD5s of
torchvision's dataset classes (Tiny ImageNet's as Avalanche checks it). A file is fetched into
``<name>.part`` next to its final place and renamed only once its MD5 matches, so a dataset's
folder never holds a half-written or unverified file:

* an interrupted transfer keeps the ``.part`` (the bytes received so far) and the next call asks
  the server for the rest with an HTTP Range request (starting over if the server ignores it);
* a completed file whose MD5 differs is deleted, ``.part`` included, since which bytes are wrong
  cannot be told: a bad prefix costs one fresh download, never a corrupt dataset;
* archives are extracted into a temporary folder and moved into place when complete.

``$DDRANK_DATA_MIRROR`` (or ``mirror=``) replaces every URL's location with a base URL that
serves the same files by name, for institutional mirrors and for tests.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ddrank.data.base import DATASETS, DatasetSpec, DownloadPlan, Resource
from ddrank.errors import DataError, InputError
from ddrank.paths import cache_dir

__all__ = ["MIRROR_ENV", "default_data_root", "download_dataset", "download_files"]

MIRROR_ENV = "DDRANK_DATA_MIRROR"
_CHUNK_BYTES = 1 << 16
_TIMEOUT_SECONDS = 60
_TRANSFER_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError)
_EXTRACT_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError)


def default_data_root() -> Path:
    """Where datasets go when no data root is given: ``data/`` in the ddrank cache directory."""
    return cache_dir("data")


def download_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    mirror: str | None = None,
    progress: bool = True,
) -> Path:
    """Fetch and verify dataset ``name`` into ``root`` (default :func:`default_data_root`); returns the root.

    Nothing is fetched when the root already holds the dataset. ``mirror`` (else
    ``$DDRANK_DATA_MIRROR``) is a base URL serving the files by name. Datasets that cannot be
    downloaded (ImageNet and its subsets) raise a DataError saying where to get them.
    """
    from ddrank.data import real  # noqa: F401  (registers the datasets)

    spec = DATASETS.get(name)
    info = spec.info
    directory = Path(root if root is not None else default_data_root()).expanduser().resolve()
    if spec.download is None:
        if spec.manual is None:
            raise InputError(f"dataset {info.name!r} needs no download (it ships with scikit-learn)")
        raise DataError(spec.manual.format(root=directory))
    if _present(spec, directory):
        return directory
    download_files(spec.download, directory, mirror=mirror, progress=progress)
    spec.locate(directory, info)  # type: ignore[misc]  # the verified files must now form the layout
    return directory


def download_files(
    plan: DownloadPlan, root: str | os.PathLike[str], *, mirror: str | None = None, progress: bool = True
) -> None:
    """Fetch, verify and (for archives) extract every file of ``plan`` under ``root``.

    A file already in place with the right MD5 is not fetched again. ``mirror`` as in
    :func:`download_dataset`.
    """
    from torchvision.datasets.utils import check_integrity  # torchvision loads when a download runs

    directory = Path(root).expanduser().resolve()
    base = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    for resource in plan.resources:
        folder = directory / resource.folder
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / resource.filename
        if not check_integrity(target, resource.md5):
            url = resource.url if not base else f"{base.rstrip('/')}/{resource.filename}"
            _fetch(url, target, resource, plan.source, progress)
        if resource.extract:
            _extract(target, folder)


def _present(spec: DatasetSpec, directory: Path) -> bool:
    if not directory.is_dir():
        return False
    try:
        spec.locate(directory, spec.info)  # type: ignore[misc]
    except InputError:
        return False
    return True


def _fetch(url: str, target: Path, resource: Resource, source: str, progress: bool) -> None:
    """Download ``url`` into ``target`` through ``target.part``, resuming it, and verify its MD5."""
    from torchvision.datasets.utils import calculate_md5

    part = target.with_name(target.name + ".part")
    if not _transfer(url, part, progress):
        _transfer(url, part, progress)  # a stale .part was discarded: one fresh transfer
    actual = calculate_md5(part)
    if resource.md5 is not None and actual != resource.md5:
        part.unlink()
        raise DataError(
            f"{target.name} from {url} fails its checksum: MD5 {actual}, expected {resource.md5} ({source}); "
            "the download was deleted, run again (or check the mirror)"
        )
    os.replace(part, target)


def _transfer(url: str, part: Path, progress: bool) -> bool:
    """Append the missing bytes to ``part``; False when a stale ``part`` had to be discarded first."""
    from torchvision.datasets.utils import USER_AGENT

    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    total: int | None = None
    connected = False
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=_TIMEOUT_SECONDS
        ) as response:
            connected = True
            start, total = _content_range(response, offset)
            with (
                part.open("ab" if start else "wb") as out,
                _TransferBar(part.name[: -len(".part")], total, start, progress) as bar,
            ):
                while chunk := response.read(_CHUNK_BYTES):
                    out.write(chunk)
                    bar(len(chunk))
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the .part is at least as long as the file: start over
            part.unlink()
            return False
        raise DataError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except _TRANSFER_ERRORS as exc:
        if not connected:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise DataError(
                f"cannot reach {url} ({reason}); check the network, or point ${MIRROR_ENV} at a mirror"
            ) from exc
        raise _interrupted(url, part, total, exc) from exc
    if total is not None and part.stat().st_size != total:
        raise _interrupted(url, part, total, "the connection closed early")
    return True


def _content_range(response: http.client.HTTPResponse, offset: int) -> tuple[int, int | None]:
    """(byte the body starts at, full size) from a 200 or 206 response to a request from ``offset``."""
    if response.status == 206:
        match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if match is None or int(match.group(1)) != offset:
            raise DataError(
                f"{response.url} answered a resume request with a wrong Content-Range; delete the .part file"
            )
        return offset, None if match.group(2) == "*" else int(match.group(2))
    length = response.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _interrupted(url: str, part: Path, total: int | None, reason: object) -> DataError:
    received = part.stat().st_size if part.is_file() else 0
    of = f" of {total:,}" if total is not None else ""
    return DataError(
        f"download of {url} stopped after {received:,}{of} bytes ({reason}); run again to resume from {part}"
    )


class _TransferBar:
    """A rich transfer bar on a terminal, nothing otherwise; calling it advances by a byte count."""

    def __init__(self, label: str, total: int | None, done: int, enabled: bool):
        console = Console(stderr=True)
        self._progress = (
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            if enabled and console.is_terminal and sys.stderr.isatty()
            else None
        )
        self._label, self._total, self._done = label, total, done

    def __enter__(self) -> _TransferBar:
        if self._progress is not None:
            self._progress.__enter__()
            self._task = self._progress.add_task(self._label, total=self._total, completed=self._done)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)

    def __call__(self, count: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, count)


def _extract(archive: Path, folder: Path) -> None:
    """Unpack ``archive`` into a temporary folder, then move its entries into ``folder``."""
    from torchvision.datasets.utils import extract_archive

    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=folder))
    try:
        try:
            extract_archive(str(archive), str(staging))
        except _EXTRACT_ERRORS as exc:
            raise DataError(f"cannot extract {archive}: {exc}; delete it and download again") from exc
        for entry in staging.iterdir():
            final = folder / entry.name
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            elif final.exists() or final.is_symlink():
                final.unlink()
            os.replace(entry, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
