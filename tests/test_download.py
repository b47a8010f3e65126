"""download_movielens against a local HTTP server (no internet here): good, corrupted and missing downloads."""

import functools
import hashlib
import http.server
import threading
import zipfile

import pytest

from spark_retrieval.data import download_movielens
from spark_retrieval.data.download import PUBLISHED_MD5
from spark_retrieval.errors import DownloadError, InvalidParameterError


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on 127.0.0.1; yields (folder, base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def publish_zip(root, name, files, md5_file=True) -> str:
    """Write ``<name>.zip`` holding ``name/<file>`` entries (and ``<name>.zip.md5`` as GroupLens does); return the MD5."""
    archive = root / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for file, text in files.items():
            bundle.writestr(f"{name}/{file}", text)
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    if md5_file:
        (root / f"{name}.zip.md5").write_text(f"MD5 ({name}.zip) = {digest}\n")
    return digest


def test_good_download_verified_by_published_md5_file(served, tmp_path):
    root, base_url = served
    publish_zip(root, "ml-latest-small", {"ratings.csv": "userId,movieId,rating,timestamp\n1,1,4.0,1\n", "README.txt": "hi"})
    dest = tmp_path / "data"
    folder = download_movielens("ml-latest-small", dest, base_url=base_url)
    assert folder == dest / "ml-latest-small"
    assert (folder / "ratings.csv").read_text().endswith("1,1,4.0,1\n")
    assert sorted(p.name for p in dest.iterdir()) == ["ml-latest-small"]
    # already there: returned as is, without a download
    (root / "ml-latest-small.zip").unlink()
    assert download_movielens("ml-latest-small", dest, base_url=base_url) == folder


def test_caller_md5_and_explicit_url(served, tmp_path):
    root, base_url = served
    digest = publish_zip(root, "mirror", {"ratings.dat": "1::2::3::4\n"}, md5_file=False)
    folder = download_movielens("ml-1m", tmp_path / "data", url=f"{base_url}/mirror.zip", md5=digest)
    assert (folder / "ratings.dat").read_text() == "1::2::3::4\n"


def test_corrupted_download_leaves_nothing(served, tmp_path):
    root, base_url = served
    publish_zip(root, "ml-latest-small", {"ratings.csv": "x"})
    (root / "ml-latest-small.zip.md5").write_text("MD5 (ml-latest-small.zip) = " + "0" * 32 + "\n")
    dest = tmp_path / "data"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_movielens("ml-latest-small", dest, base_url=base_url)
    assert list(dest.iterdir()) == []


def test_pinned_md5_rejects_a_different_zip(served, tmp_path):
    root, base_url = served
    publish_zip(root, "ml-100k", {"u.data": "1\t2\t3\t4\n"})  # its own .md5 matches, the published one does not
    dest = tmp_path / "data"
    with pytest.raises(DownloadError, match=PUBLISHED_MD5["ml-100k"]):
        download_movielens("ml-100k", dest, base_url=base_url)
    assert list(dest.iterdir()) == []


def test_not_a_zip(served, tmp_path):
    root, base_url = served
    (root / "ml-25m.zip").write_bytes(b"not a zip")
    with pytest.raises(DownloadError, match="not a valid zip"):
        download_movielens("ml-25m", tmp_path / "data", base_url=base_url, md5=hashlib.md5(b"not a zip").hexdigest())
    assert list((tmp_path / "data").iterdir()) == []


def test_missing_zip_is_a_404(served, tmp_path):
    _, base_url = served
    dest = tmp_path / "data"
    with pytest.raises(DownloadError, match="404"):
        download_movielens("ml-25m", dest, base_url=base_url)
    assert not dest.exists() or list(dest.iterdir()) == []


def test_no_checksum_available(served, tmp_path):
    root, base_url = served
    publish_zip(root, "ml-latest", {"ratings.csv": "x"}, md5_file=False)
    with pytest.raises(DownloadError, match="pass md5="):
        download_movielens("ml-latest", tmp_path / "data", base_url=base_url)


def test_unknown_dataset(tmp_path):
    with pytest.raises(InvalidParameterError, match="ml-100k"):
        download_movielens("ml-3m", tmp_path)
