"""Downloads against a local HTTP server (with Range support) serving archives in the real layouts."""

import gzip
import hashlib
import io
import pickle
import re
import socket
import struct
import tarfile
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets as tv
import yaml

from ddrank.cli import main
from ddrank.data.base import DATASETS, DownloadPlan, Resource
from ddrank.data.download import download_dataset, download_files
from ddrank.data.real import load_real
from ddrank.errors import DataError, InputError
from ddrank.registry import Entry

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class FileServer(ThreadingHTTPServer):
    """Serves ``files`` by name, honours ``Range: bytes=N-`` and can drop a transfer midway."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.files: dict[str, bytes] = {}
        self.drop_after: dict[str, int] = {}  # name -> bytes sent before the connection is cut (once)
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class RangeHandler(BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        name, requested = self.path.lstrip("/"), self.headers.get("Range")
        self.server.requests.append((name, requested))
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start, status = 0, 200
        if requested and not self.server.ignore_range:
            start, status = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1)), 206
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cut = self.server.drop_after.pop(name, None)
        if cut is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[:cut])
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True


@pytest.fixture
def server():
    httpd = FileServer()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def cifar10_archive(per_batch: int = 40, seed: int = 0) -> bytes:
    """cifar-10-python.tar.gz as Toronto ships it: cifar-10-batches-py/ with the six pickles and the meta."""
    rng = np.random.default_rng(seed)
    members = {"batches.meta": {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072}}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        members[name] = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            b"labels": [int(x) for x in rng.integers(0, 10, size=per_batch)],
        }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            payload = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def mnist_files(count: int = 6, seed: int = 0) -> dict[str, bytes]:
    """The four gzip'd IDX files of an MNIST-like dataset."""
    rng = np.random.default_rng(seed)
    files = {}
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            files[f"{prefix}-{kind}-ubyte.gz"] = gzip.compress(header + array.tobytes())
    return files


def tiny_imagenet_zip() -> bytes:
    """tiny-imagenet-200.zip with the raw layout: train/<wnid>/images/, val/images + val_annotations.txt."""
    from PIL import Image

    wnids = [f"n{index:08d}" for index in range(200)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tiny-imagenet-200/wnids.txt", "\n".join(wnids) + "\n")
        annotations = []
        for label, wnid in enumerate(wnids):
            png = io.BytesIO()
            Image.fromarray(np.full((64, 64, 3), label % 256, np.uint8)).save(png, format="PNG")
            archive.writestr(f"tiny-imagenet-200/train/{wnid}/images/{wnid}_0.png", png.getvalue())
            archive.writestr(f"tiny-imagenet-200/val/images/val_{label}.png", png.getvalue())
            annotations.append(f"val_{label}.png\t{wnid}\t0\t0\t63\t63")
        archive.writestr("tiny-imagenet-200/val/val_annotations.txt", "\n".join(annotations) + "\n")
    return buffer.getvalue()


def cifar_plan(archive: bytes) -> DownloadPlan:
    """CIFAR-10's plan with the fixture archive's MD5 in place of the published one."""
    real = DATASETS.get("cifar10").download.resources[0]
    return DownloadPlan(
        (Resource(real.url, real.filename, md5(archive), extract=True),), source="test fixture"
    )


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --- the plans ----------------------------------------------------------------------------------


def test_plans_take_urls_and_checksums_from_torchvision():
    def plan(name):
        return {
            (r.url, r.filename, r.md5, r.folder, r.extract) for r in DATASETS.get(name).download.resources
        }

    assert plan("cifar10") == {(tv.CIFAR10.url, tv.CIFAR10.filename, tv.CIFAR10.tgz_md5, "", True)}
    assert plan("cifar100") == {(tv.CIFAR100.url, tv.CIFAR100.filename, tv.CIFAR100.tgz_md5, "", True)}
    for name, cls in (("mnist", tv.MNIST), ("fashion-mnist", tv.FashionMNIST), ("kmnist", tv.KMNIST)):
        folder = f"{cls.__name__}/raw"
        assert plan(name) == {(cls.mirrors[0] + f, f, m, folder, False) for f, m in cls.resources}
    assert plan("svhn") == {
        (u, f, m, "", False) for s, (u, f, m) in tv.SVHN.split_list.items() if s != "extra"
    }
    assert plan("tinyimagenet") == {
        (
            "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
            "tiny-imagenet-200.zip",
            "90528d7ca1a48142e341f4ef8d21d0de",
            "",
            True,
        )
    }
    downloadable = {e.name for e in DATASETS.entries() if e.value.download is not None}
    assert downloadable == {"cifar10", "cifar100", "mnist", "fashion-mnist", "kmnist", "svhn", "tinyimagenet"}
    for entry in DATASETS.entries():
        assert (entry.value.download is None) == (entry.value.manual is not None or entry.name == "digits")


def test_imagenet_and_its_subsets_say_where_to_get_them(tmp_path):
    with pytest.raises(
        DataError, match=r"request access at https://image-net.org.*train/<wnid>/\*.JPEG"
    ) as caught:
        download_dataset("imagenet1k", tmp_path)
    assert str(tmp_path) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(DataError, match=r"imagewoof is a 10-class subset of ImageNet-1K .*mtt-distillation"):
        load_real("imagewoof", tmp_path, download=True)
    with pytest.raises(InputError, match="'digits' needs no download"):
        download_dataset("digits", tmp_path)


# --- success ------------------------------------------------------------------------------------


def test_download_verify_extract_and_load(server, tmp_path, capsys):
    archive = cifar10_archive()
    server.files["cifar-10-python.tar.gz"] = archive
    download_files(cifar_plan(archive), tmp_path, mirror=server.url)
    assert (tmp_path / "cifar-10-python.tar.gz").read_bytes() == archive
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.glob(".extract-*"))
    data = load_real("cifar10", tmp_path)
    assert data.train_images.shape == (200, 3, 32, 32) and data.classes == CIFAR10_NAMES
    assert server.requests == [("cifar-10-python.tar.gz", None)]
    download_files(cifar_plan(archive), tmp_path, mirror=server.url)  # verified file in place: no request
    assert len(server.requests) == 1
    assert capsys.readouterr().err == ""  # no progress bar when stderr is not a terminal


def test_download_dataset_skips_what_is_already_there(server, tmp_path, monkeypatch):
    archive = cifar10_archive()
    server.files["cifar-10-python.tar.gz"] = archive
    download_files(cifar_plan(archive), tmp_path, mirror=server.url)
    (tmp_path / "cifar-10-python.tar.gz").unlink()
    monkeypatch.setenv("DDRANK_DATA_MIRROR", server.url)
    assert download_dataset("cifar10", tmp_path) == tmp_path.resolve()
    assert load_real("cifar-10", tmp_path, download=True).train_images.shape[0] == 200
    assert len(server.requests) == 1


def test_multi_file_and_zip_datasets_download_into_their_layouts(server, tmp_path):
    files = mnist_files()
    server.files.update(files)
    plan = DownloadPlan(
        tuple(
            Resource(f"https://example.invalid/{n}", n, md5(b), "FashionMNIST/raw") for n, b in files.items()
        ),
        source="test fixture",
    )
    download_files(plan, tmp_path, mirror=server.url)
    assert load_real("fashion-mnist", tmp_path).test_images.shape == (6, 1, 28, 28)
    tiny = tiny_imagenet_zip()
    server.files["tiny-imagenet-200.zip"] = tiny
    zipped = DownloadPlan(
        (Resource("x", "tiny-imagenet-200.zip", md5(tiny), "", extract=True),), "test fixture"
    )
    download_files(zipped, tmp_path, mirror=server.url)
    data = load_real("tinyimagenet", tmp_path)
    assert data.train_images.shape == (200, 3, 64, 64) and data.test_labels.tolist() == list(range(200))


# --- wrong checksum -----------------------------------------------------------------------------


def test_a_wrong_checksum_is_a_clear_error_and_leaves_nothing(server, tmp_path, monkeypatch):
    server.files.update(mnist_files())  # not the published MNIST files: their MD5s differ
    monkeypatch.setenv("DDRANK_DATA_MIRROR", server.url)
    expected = (
        r"train-images-idx3-ubyte.gz from http://127.0.0.1:\d+/train-images-idx3-ubyte.gz "
        r"fails its checksum: MD5 [0-9a-f]{32}, expected f68b3c2dcbeaaa9fbdd348bbdeb94873 "
        r"\(torchvision.datasets.MNIST\); the download was deleted"
    )
    with pytest.raises(DataError, match=expected) as caught:
        load_real("mnist", tmp_path, download=True)
    assert "\n" not in str(caught.value)
    assert leftovers(tmp_path) == ["MNIST", "MNIST/raw"]
    archive = cifar10_archive()
    server.files["cifar-10-python.tar.gz"] = archive
    with pytest.raises(DataError, match="cifar-10-python.tar.gz .* fails its checksum"):
        download_dataset("cifar10", tmp_path)
    assert leftovers(tmp_path) == ["MNIST", "MNIST/raw"]  # no archive, no .part, nothing extracted


def test_a_corrupt_archive_with_the_right_checksum_is_not_extracted_halfway(server, tmp_path):
    broken = cifar10_archive()[:-200]
    server.files["cifar-10-python.tar.gz"] = broken
    with pytest.raises(DataError, match="cannot extract .*cifar-10-python.tar.gz"):
        download_files(cifar_plan(broken), tmp_path, mirror=server.url)
    assert leftovers(tmp_path) == ["cifar-10-python.tar.gz"]


# --- interrupted transfers ----------------------------------------------------------------------


def test_an_interrupted_transfer_resumes_with_a_range_request(server, tmp_path):
    archive = cifar10_archive()
    server.files["cifar-10-python.tar.gz"] = archive
    server.drop_after["cifar-10-python.tar.gz"] = len(archive) // 3
    plan = cifar_plan(archive)
    with pytest.raises(DataError, match=rf"stopped after {len(archive) // 3:,} of {len(archive):,} bytes .*"
                       r"run again to resume from .*cifar-10-python.tar.gz.part") as caught:  # fmt: skip
        download_files(plan, tmp_path, mirror=server.url)
    assert "\n" not in str(caught.value)
    part = tmp_path / "cifar-10-python.tar.gz.part"
    assert part.read_bytes() == archive[: len(archive) // 3]
    assert leftovers(tmp_path) == ["cifar-10-python.tar.gz.part"]  # nothing in place of the dataset
    download_files(plan, tmp_path, mirror=server.url)
    assert server.requests[-1] == ("cifar-10-python.tar.gz", f"bytes={len(archive) // 3}-")
    assert (tmp_path / "cifar-10-python.tar.gz").read_bytes() == archive and not part.exists()
    assert load_real("cifar10", tmp_path).train_images.shape == (200, 3, 32, 32)


def test_a_server_ignoring_range_restarts_the_transfer(server, tmp_path):
    archive = cifar10_archive()
    server.files["cifar-10-python.tar.gz"] = archive
    server.drop_after["cifar-10-python.tar.gz"] = 1000
    with pytest.raises(DataError, match="stopped after 1,000 of"):
        download_files(cifar_plan(archive), tmp_path, mirror=server.url)
    server.ignore_range = True
    download_files(cifar_plan(archive), tmp_path, mirror=server.url)
    assert (tmp_path / "cifar-10-python.tar.gz").read_bytes() == archive


def test_a_stale_part_longer_than_the_file_is_discarded(server, tmp_path):
    archive = cifar10_archive()
    server.files["cifar-10-python.tar.gz"] = archive
    (tmp_path / "cifar-10-python.tar.gz.part").write_bytes(b"\0" * (len(archive) + 10))
    download_files(cifar_plan(archive), tmp_path, mirror=server.url)
    assert [r for _, r in server.requests] == [f"bytes={len(archive) + 10}-", None]
    assert (tmp_path / "cifar-10-python.tar.gz").read_bytes() == archive


def test_a_part_with_wrong_bytes_fails_the_checksum_and_is_deleted(server, tmp_path):
    archive = cifar10_archive()
    server.files["cifar-10-python.tar.gz"] = archive
    (tmp_path / "cifar-10-python.tar.gz.part").write_bytes(b"\xff" * 100)  # not a prefix of the file
    with pytest.raises(DataError, match="fails its checksum"):
        download_files(cifar_plan(archive), tmp_path, mirror=server.url)
    assert leftovers(tmp_path) == []
    download_files(cifar_plan(archive), tmp_path, mirror=server.url)
    assert (tmp_path / "cifar-10-python.tar.gz").read_bytes() == archive


def test_an_unreachable_server_is_one_line(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    expected = r"cannot reach http://127.0.0.1:\d+/train_32x32.mat \(.*refused.*\); .*DDRANK_DATA_MIRROR"
    with pytest.raises(DataError, match=expected) as caught:
        download_dataset("svhn", tmp_path, mirror=f"http://127.0.0.1:{port}")
    assert "\n" not in str(caught.value)
    assert leftovers(tmp_path) == []


# --- --download on the command line ---------------------------------------------------------------


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def idx_files(per_class: int, seed: int) -> dict[str, bytes]:
    """The four gzip'd IDX files of a small MNIST-like dataset with every class present."""
    rng = np.random.default_rng(seed)
    files = {}
    for prefix, count in (("train", per_class), ("t10k", 2)):
        labels = np.repeat(np.arange(10, dtype=np.uint8), count)
        images = rng.integers(0, 256, size=(labels.size, 28, 28), dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            files[f"{prefix}-{kind}-ubyte.gz"] = gzip.compress(header + array.tobytes())
    return files


def test_download_flag_fetches_verifies_and_trains(server, tmp_path, capsys, monkeypatch):
    files = idx_files(per_class=6, seed=0)
    server.files.update(files)
    monkeypatch.setenv("DDRANK_DATA_MIRROR", server.url)
    spec = DATASETS.get("mnist")
    plan = DownloadPlan(
        tuple(Resource(f"https://example.invalid/{n}", n, md5(b), "MNIST/raw") for n, b in files.items()),
        source="test fixture",
    )
    protocol = tmp_path / "tiny.yaml"
    recipe = {"model": "ConvNet-3", "epochs": 1, "lr_grid": [0.01], "rounds": 1, "full_data": {"epochs": 1}}
    protocol.write_text(yaml.safe_dump({"name": "tiny", "datasets": ["mnist"], "protocol": recipe}))
    root = tmp_path / "data"
    args = ["calibrate", "--dataset", "mnist", "--data-root", root, "--protocol", protocol, "--ipc", "1"]
    code, _, err = cli(capsys, *args, "--no-store", "--device", "cpu")
    assert (
        code == 2
        and "pass --download (download=True in Python) to fetch it into" in err
        and err.count("\n") == 1
    )
    code, _, err = cli(capsys, *args, "--download", "--no-store", "--device", "cpu")
    assert code == 2 and "fails its checksum" in err and "torchvision.datasets.MNIST" in err  # the real MD5s
    assert not list(root.rglob("*.gz")) and not list(root.rglob("*.part"))
    entry = DATASETS._entries["mnist"]
    monkeypatch.setitem(DATASETS._entries, "mnist", Entry(entry.name, replace(spec, download=plan), ""))
    code, out, err = cli(capsys, *args, "--download", "--no-store", "--device", "cpu")
    assert code == 0, err
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == sorted(files)
    assert "random, IPC 1" in out and "whole dataset" in out and "no published value" in out
    served = len(server.requests)
    code, _, err = cli(capsys, *args, "--download", "--no-store", "--device", "cpu")
    assert code == 0 and len(server.requests) == served  # verified files in place: nothing fetched again
