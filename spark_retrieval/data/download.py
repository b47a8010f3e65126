"""Fetch an official MovieLens zip from GroupLens, verify its MD5 and unpack it atomically (standard library only)."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from ..errors import DownloadError, InvalidParameterError
from .movielens import DATASETS

BASE_URL = "https://files.grouplens.org/datasets/movielens"

PUBLISHED_MD5 = {
    "ml-100k": "0e33842e24a9c977be4e0107933c0723",
    "ml-1m": "c4d9eecfca2ab87c1945afe126590906",
    "ml-20m": "cd245b17a1ae2cc31bb14903e1204af3",
    "ml-25m": "6b51fb2759a8657d3bfcbfc42b592ada",
}
"""MD5s GroupLens publishes for its frozen benchmark zips. ml-latest and ml-latest-small are development
releases that GroupLens may regenerate, so theirs are not pinned: the ``.md5`` file beside the zip is used."""

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60


def download_movielens(
    name: str,
    dest: str | os.PathLike,
    url: str | None = None,
    base_url: str = BASE_URL,
    md5: str | None = None,
) -> Path:
    """Download MovieLens release ``name`` and unpack it into ``dest/<name>``; return that folder.

    The zip comes from ``url`` (default ``<base_url>/<name>.zip``) and must match ``md5``: the caller's value,
    else the one in ``PUBLISHED_MD5``, else the one GroupLens publishes at ``<url>.md5``. It is unpacked in a
    temporary folder inside ``dest`` and renamed into place, so a failed or corrupted download leaves nothing
    behind. An existing ``dest/<name>`` is returned as is, without downloading.
    """
    if name not in DATASETS:
        raise InvalidParameterError(f"unknown MovieLens dataset {name!r}; known: {', '.join(DATASETS)}")
    dest = Path(dest)
    target = dest / name
    if target.exists():
        return target
    url = url or f"{base_url.rstrip('/')}/{name}.zip"
    expected = (md5 or PUBLISHED_MD5.get(name) or published_md5(url)).lower()

    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest))
    try:
        archive = staging / f"{name}.zip"
        actual = fetch(url, archive)
        if actual != expected:
            raise DownloadError(f"checksum mismatch for {url}: expected MD5 {expected}, got {actual}")
        unpacked = unpack(archive, staging / "unpacked")
        os.replace(unpacked, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def fetch(url: str, path: Path) -> str:
    """Stream ``url`` into ``path``; return the MD5 of what was written."""
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(path, "wb") as out:
            while chunk := response.read(CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"could not download {url}: {exc}") from None
    return digest.hexdigest()


def published_md5(url: str) -> str:
    """The MD5 in ``<url>.md5`` (``MD5 (x.zip) = <hex>`` or ``<hex>  x.zip``)."""
    checksum_url = f"{url}.md5"
    try:
        with urllib.request.urlopen(checksum_url, timeout=TIMEOUT_S) as response:
            text = response.read(4096).decode("ascii", errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"no checksum to verify {url} against ({checksum_url}: {exc}); pass md5=") from None
    found = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if found is None:
        raise DownloadError(f"{checksum_url} holds no MD5: {text[:200]!r}")
    return found.group(0)


def unpack(archive: Path, folder: Path) -> Path:
    """Extract ``archive`` into ``folder``; return its single top-level folder, or ``folder`` itself."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(folder)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive.name} is not a valid zip: {exc}") from None
    entries = list(folder.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder
