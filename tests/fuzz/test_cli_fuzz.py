"""Fuzzing the ``ddrank`` command in-process: every malformed input of the robustness and untrusted-input
reports (hostile and damaged files of every format, bad options, paths and devices, protocols with wrong
types in every key, damaged and foreign stores) must end with exit code 2 and exactly one line on stderr,
with no traceback, nothing trained and no watched file changed. The default run tries a few derandomised
examples per property; the ``slow`` variants try many random ones."""

from __future__ import annotations

import sqlite3
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given
from hypothesis import strategies as st
from PIL import Image

import ddrank.engine.runner
import ddrank.evaluation.evaluator
from ddrank.cli import main
from ddrank.engine.job import JobResult, TrainJob, TrainSpec
from ddrank.errors import DDRankError
from ddrank.protocols import AugmentSpec, OptimizerSpec, Protocol, ScheduleSpec
from ddrank.protocols.protocol import METADATA_FIELDS
from ddrank.store import ResultStore
from malformed import (
    SYNTHETIC_FORMATS,
    MakesDirectory,
    fuzz_settings,
    npy_bytes,
    png_header,
    write_synthetic,
    zip_bomb,
)

FAST, SLOW = fuzz_settings(15, 300, HealthCheck.function_scoped_fixture)
CLASSES, IPC = 10, 10
DDRANKING = Path("/work/shared/ddranking-configs/dist/configs")


@pytest.fixture(autouse=True)
def no_training(no_training, monkeypatch) -> None:
    """Any attempt to train, or to load teachers, fails the case (the command then reports an internal
    error, exit 1)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("training started on bad input")

    monkeypatch.setattr(ddrank.evaluation.evaluator, "protocol_teachers", refuse)


def _snapshot(paths: list[Path]) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            out[str(path)] = path.read_bytes() if path.exists() else None
    return out


def refused(capsys, args: list[Any], watched: list[Path] = (), *fragments: str) -> str:
    """Run ``ddrank args``: exit 2, one line on stderr naming ``fragments``, no traceback, nothing on
    stdout, no watched file changed. Returns the line."""
    before = _snapshot(list(watched))
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}: {err}"
    assert err.startswith("ddrank: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err and out == "", (out, err)
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    assert _snapshot(list(watched)) == before, "a refused input changed a watched file"
    return err


def images(n: int = CLASSES * IPC, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * scale


def evaluate(path: Path | str, *extra: Any) -> list[Any]:
    return ["evaluate", "--images", path, "--device", "cpu", "--no-progress", "--no-store", *extra]


# ---- the reported cases, one by one -----------------------------------------------------------------


@dataclass
class Case:
    """A malformed input: ``make(folder)`` writes its files and returns the command's arguments."""

    id: str
    make: Callable[[Path], list[Any]]
    fragments: tuple[str, ...] = ()
    watched: Callable[[Path], list[Path]] = field(default=lambda folder: [folder])


def _set(folder: Path, value: Any, name: str = "set.pt") -> Path:
    torch.save(value, folder / name)
    return folder / name


def _protocol_file(folder: Path, text: str | bytes) -> list[Any]:
    path = folder / "p.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return evaluate(_set(folder, images()), "--protocol", path)


def _npz_declaring(folder: Path) -> list[Any]:
    with zipfile.ZipFile(folder / "big.npz", "w") as archive:
        archive.writestr("images.npy", npy_bytes((8_000_000, 1, 1000, 8000)))
    return evaluate(folder / "big.npz")


def _zip_bomb(folder: Path) -> list[Any]:
    zip_bomb(folder / "bomb.npz", 1100)  # about 1.1 MB inflating to 1.1 GiB, past the 1 GiB default
    return evaluate(folder / "bomb.npz")


def _huge_png(folder: Path) -> list[Any]:
    for k in range(CLASSES):
        (folder / "syn" / f"c{k}").mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(folder / "syn" / f"c{k}" / "0.png")
    (folder / "syn" / "c0" / "1.png").write_bytes(png_header(20000, 20000))
    return evaluate(folder / "syn")


def _ddranking(folder: Path, name: str, old: str, new: str) -> list[Any]:
    text = (DDRANKING / name).read_text()
    assert old in text
    (folder / "config.yaml").write_text(text.replace(old, new))
    return evaluate(_set(folder, images()), "--config", folder / "config.yaml")


def _foreign_sqlite(folder: Path) -> list[Any]:
    conn = sqlite3.connect(folder / "other.db")
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('x')")
    conn.commit()
    conn.close()
    args = evaluate(_set(folder, images()), "--store", folder / "other.db")
    args.remove("--no-store")
    return args


def _damaged_store(folder: Path, table: str, column: str, value: Any) -> list[Any]:
    path = folder / "r.sqlite"
    path.write_bytes(template_store())
    conn = sqlite3.connect(path)
    conn.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = 2", (value,))
    conn.commit()
    conn.close()
    args = evaluate(_set(folder, images()), "--store", path)
    args.remove("--no-store")
    return args


def _pickle_bomb(folder: Path) -> list[Any]:
    torch.save({"images": images(), "hook": MakesDirectory(folder / "pwned")}, folder / "set.pt")
    return evaluate(folder / "set.pt")


def _soft_labels(folder: Path) -> list[Any]:
    soft = torch.softmax(torch.randn(CLASSES * IPC, CLASSES), dim=1)
    return evaluate(_set(folder, {"images": images(), "labels": soft}), "--strict")


def _bytes_file(data: bytes) -> Callable[[Path], list[Any]]:
    def make(folder: Path) -> list[Any]:
        (folder / "set.pt").write_bytes(data)
        return evaluate(folder / "set.pt")

    return make


def _truncated_pt(folder: Path) -> list[Any]:
    path = _set(folder, images())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return evaluate(path)


def _with_store(store: str) -> Callable[[Path], list[Any]]:
    def make(folder: Path) -> list[Any]:
        (folder / "afile").write_text("x")
        args = evaluate(_set(folder, images()), "--store", folder / store)
        args.remove("--no-store")
        return args

    return make


# A store in WAL mode read with mode=ro may leave its -wal and -shm files beside it: the store
# itself must not change.
STORE_FILE = lambda folder: [folder / "r.sqlite", folder / "set.pt"]  # noqa: E731

CASES = [
    Case(
        "huge-values-strict",
        lambda f: evaluate(_set(f, images(scale=1e30)), "--strict"),
        ("far outside any image space", "--strict"),
    ),
    Case(
        "255-floats-strict",
        lambda f: evaluate(_set(f, torch.rand(100, 1, 8, 8) * 255), "--strict"),
        ("look like 0..255 pixels", "--space pixel"),
    ),
    Case(
        "uint8-0-1-strict",
        lambda f: evaluate(_set(f, (images() > 0).to(torch.uint8)), "--strict"),
        ("--space pixel",),
    ),
    Case("soft-labels-hard-protocol-strict", _soft_labels, ("soft labels", "soft-label protocol")),
    Case("npz-declaring-64e12-elements", _npz_declaring, ("declares an array", "232.8 TiB")),
    Case("npz-inflating-past-the-limit", _zip_bomb, ("inflates", "--max-input-size")),
    Case("png-20000x20000", _huge_png, ("1.png", "400000000 pixels")),
    Case("device-foo", lambda f: evaluate(_set(f, images()), "--device", "foo"), ("--device", "'foo'")),
    Case("json-is-a-folder", lambda f: evaluate(_set(f, images()), "--json", f), ("--json", "is a folder")),
    Case(
        "json-parent-is-a-file",
        lambda f: evaluate(_set(f, images()), "--json", _set(f, 0, "x.pt") / "out.json"),
        ("is a file",),
    ),
    Case("store-parent-is-a-file", _with_store("afile/r.sqlite"), ("afile",)),
    Case("store-is-a-folder", _with_store("."), ("is a folder",)),
    Case("protocol-binary", lambda f: _protocol_file(f, b"\x00\xff\xfe\x81 binary\x00"), ("p.yaml",)),
    Case("protocol-tabs", lambda f: _protocol_file(f, "name: x\nprotocol:\n\tepochs: 3\n"), ("p.yaml",)),
    Case("protocol-syntax", lambda f: _protocol_file(f, "name: [x\nprotocol: {"), ("p.yaml",)),
    Case(
        "protocol-python-tag",
        lambda f: _protocol_file(f, "name: !!python/object/apply:os.system ['true']\n"),
        ("p.yaml",),
    ),
    Case(
        "protocol-lr-inf", lambda f: _protocol_file(f, _tiny_yaml(lr_grid=[0.1, float("inf")])), ("lr_grid",)
    ),
    Case("protocol-lr-nan", lambda f: _protocol_file(f, _tiny_yaml(lr_grid=[float("nan")])), ("lr_grid",)),
    Case("protocol-lr-1e30", lambda f: _protocol_file(f, _tiny_yaml(lr_grid=[1e30])), ("lr_grid",)),
    Case("protocol-epochs-1e12", lambda f: _protocol_file(f, _tiny_yaml(epochs=10**12)), ("epochs",)),
    Case(
        "ddranking-num-epochs-1e12",
        lambda f: _ddranking(f, "Demo_LRS_Hard_Label.yaml", "num_epochs: 1000", "num_epochs: 1000000000000"),
        ("num_epochs", "DDRANK_MAX_EPOCHS"),
    ),
    Case(
        "ddranking-hundreds-of-teachers",
        lambda f: _ddranking(
            f, "Demo_LRS_Soft_Label.yaml", "[ResNet-18-BN]", "[" + ", ".join(["ResNet-18-BN"] * 300) + "]"
        ),
        ("teacher",),
    ),
    Case("pickle-with-code", _pickle_bomb, ("--allow-pickle",)),
    Case("random-bytes", _bytes_file(bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))),
    Case("text-file", _bytes_file(b"images: not really\n" * 20), ("text",)),
    Case("zero-length", _bytes_file(b""), ("empty",)),
    Case("truncated", _truncated_pt, ("truncated",)),
    Case("foreign-sqlite-store", _foreign_sqlite, ("not a ddrank results store",)),
    Case(
        "store-curve-not-json",
        lambda f: _damaged_store(f, "jobs", "curve", "{not json"),
        ("curve",),
        STORE_FILE,
    ),
    Case(
        "store-payload-not-json",
        lambda f: _damaged_store(f, "evaluations", "payload", "not json"),
        ("payload",),
        STORE_FILE,
    ),
    Case("store-future-schema", lambda f: _future_store(f), ("newer",), STORE_FILE),
    *[
        Case(
            f"count-{flag}-{value}",
            lambda f, flag=flag, value=value: evaluate(_set(f, images()), flag, value),
            (flag, "positive integer"),
        )
        for flag in ("--max-members", "--rounds", "--ipc", "--data-parallel-images")
        for value in ("0", "-3", "1.5", "x")
    ],
]


def _tiny_doc(**changes: Any) -> dict[str, Any]:
    protocol = {
        "model": "ConvNet-2-W16",
        "epochs": 2,
        "lr_grid": [0.1],
        "rounds": 1,
        "full_data": {"lr": 0.1, "epochs": 1, "batch_size": 128},
    }
    return {"name": "tiny", "datasets": ["digits"], "protocol": protocol | changes}


def _tiny_yaml(**changes: Any) -> str:
    return yaml.safe_dump(_tiny_doc(**changes))


def _future_store(folder: Path) -> list[Any]:
    path = folder / "r.sqlite"
    path.write_bytes(template_store())
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    args = evaluate(_set(folder, images()), "--store", path)
    args.remove("--no-store")
    return args


_TEMPLATE: list[bytes] = []
SPEC = TrainSpec("MLP", 1, 10, 8, OptimizerSpec(), ScheduleSpec(), 10, 32, AugmentSpec(), (5,))


def template_store() -> bytes:
    """The bytes of a small healthy store (built once): three jobs and two evaluations."""
    if not _TEMPLATE:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "r.sqlite"
            with ResultStore(path, device="cpu") as store:
                for i in range(3):
                    job = TrainJob(SPEC, f"syn:{i}", "val:0", 0.01 * (i + 1), i, f"key{i}", "syn", 0)
                    store.put(job, JobResult(0.5, 0.4, ((5, 0.3), (10, 0.5)), 1.0, "loop", 0.9, (0.5,) * 10))
                for method in ("dm", "mtt"):
                    store.record_evaluation({"method": method, "dataset": "digits", "ipc": 10, "rounds": 1})
            _TEMPLATE.append(path.read_bytes())
    return _TEMPLATE[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_reported_input_is_one_line_exit_2_and_changes_nothing(case, tmp_path, capsys):
    args = case.make(tmp_path)
    refused(capsys, args, case.watched(tmp_path), *case.fragments)
    assert not (tmp_path / "pwned").exists()


def test_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    refused(
        capsys, evaluate(_set(tmp_path, images()), "--device", "cuda"), [tmp_path], "CUDA is not available"
    )


# ---- damaged files of every format -----------------------------------------------------------------


def _write(fmt: str, folder: Path) -> Path:
    return write_synthetic(fmt, folder, images(), torch.arange(CLASSES).repeat_interleave(IPC))


def _first_file(source: Path) -> Path:
    return min(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else source


@pytest.mark.parametrize("damage", ["zero-length", "truncated", "oversized"])
@pytest.mark.parametrize("fmt", SYNTHETIC_FORMATS)
def test_damaged_and_oversized_files_of_every_format(fmt, damage, tmp_path, capsys):
    source = _write(fmt, tmp_path)
    target = _first_file(source)
    extra: list[str] = []
    if damage == "zero-length":
        target.write_bytes(b"")
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[: max(1, target.stat().st_size * 2 // 3)])
    else:
        extra = ["--max-input-size", "64"]
    fragments = ("--max-input-size",) if damage == "oversized" else ()
    refused(capsys, evaluate(source, *extra), [tmp_path], *fragments)


# ---- wrong types in every protocol key (hypothesis) -------------------------------------------------


def _keys(model: type, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every key of the protocol model, nested specs included, with its annotation."""
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        yield path, info.annotation
        annotation = info.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields") and len(prefix) < 2:
            yield from _keys(annotation, path)


# Metadata (name, sources, ...) sits at the top of a protocol file, beside ``protocol:``; the rest inside.
DOCUMENT_KEYS = [
    (("^", key), Any) for key in ("name", "version", "description", "datasets", *METADATA_FIELDS)
]
KEYS = sorted(
    [*((path, kind) for path, kind in _keys(Protocol) if path[0] not in METADATA_FIELDS), *DOCUMENT_KEYS],
    key=lambda item: item[0],
)
NAMES = st.text("abcxyz", min_size=1, max_size=4)
# Values no key accepts: a mapping of unknown keys to lists, or a list of lists.
ANY_WRONG = st.one_of(
    st.dictionaries(NAMES.map(lambda k: f"zz_{k}"), st.lists(st.none(), min_size=1, max_size=2), min_size=1),
    st.lists(st.lists(st.integers(-5, 5), min_size=1, max_size=2), min_size=1, max_size=3),
)


def _numeric(annotation: Any) -> bool:
    kinds = {annotation, *get_args(annotation)} if get_origin(annotation) is not None else {annotation}
    return bool(kinds & {int, float}) and str not in kinds and get_origin(annotation) is not tuple


@st.composite
def wrong_key(draw: st.DrawFn) -> tuple[tuple[str, ...], Any]:
    path, annotation = draw(st.sampled_from(KEYS))
    if _numeric(annotation):
        value = draw(st.one_of(ANY_WRONG, st.text("qwrtzpsdghjklvm", min_size=1, max_size=6)))
    else:
        value = draw(ANY_WRONG)
    return path, value


def _protocol_case(tmp: Path, capsys, path: tuple[str, ...], value: Any) -> None:
    doc = _tiny_doc()
    node = doc["protocol"]
    fragments = (path[-1],)  # a key inside the protocol is named; a document key need not be
    if path[0] == "^":
        node, path, fragments = doc, path[1:], ()
    for key in path[:-1]:
        node = node.setdefault(key, {})
        assume(isinstance(node, dict))
    node[path[-1]] = value
    (tmp / "p.yaml").write_text(yaml.safe_dump(doc))
    set_path = tmp / "set.pt"
    if not set_path.exists():
        _set(tmp, images())
    refused(capsys, evaluate(set_path, "--protocol", tmp / "p.yaml"), [tmp], *fragments)


@FAST
@given(case=wrong_key())
def test_a_wrong_type_in_any_protocol_key_is_one_line(case, tmp_path_factory, capsys):
    _protocol_case(tmp_path_factory.mktemp("proto"), capsys, *case)


@pytest.mark.slow
@SLOW
@given(case=wrong_key())
def test_a_wrong_type_in_any_protocol_key_is_one_line_many(case, tmp_path_factory, capsys):
    _protocol_case(tmp_path_factory.mktemp("proto"), capsys, *case)


def test_every_protocol_key_is_fuzzed():
    flat = {".".join(path) for path, _ in KEYS}
    assert {"epochs", "lr_grid", "labels.mode", "full_data.batch_size", "augment.dsa", "^.name"} <= flat


# ---- corrupted store rows (hypothesis) --------------------------------------------------------------

COLUMNS = [("jobs", c) for c in ("curve", "test_acc", "test_per_class", "seconds", "diverged", "backend")]
COLUMNS += [("evaluations", c) for c in ("payload", "ipc", "rounds", "method")]
ROW_VALUES = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.sampled_from(["[]", "{}", "[[1]]", '{"a": 1}', "[1, 2]", "NaN", "null"]),
)


def _store_case(tmp: Path, capsys, table_column: tuple[str, str], value: Any) -> None:
    table, column = table_column
    try:
        args = _damaged_store(tmp, table, column, value)
    except sqlite3.IntegrityError:  # the schema itself refuses the value (NOT NULL)
        assume(False)
    with ResultStore(tmp / "r.sqlite", readonly=True) as store:
        try:
            store.check_integrity()
            healthy = True
        except DDRankError:
            healthy = False
    assume(not healthy)  # a value that happens to be valid is not a damaged row
    refused(capsys, args, STORE_FILE(tmp), "r.sqlite")
    for command in (["leaderboard"], ["export", "--out", tmp / "out.json"]):
        code = main([*map(str, command), "--store", str(tmp / "r.sqlite")])
        out, err = capsys.readouterr()
        assert code in (0, 2) and "Traceback" not in err and err.count("\n") <= 1, err


@FAST
@given(table_column=st.sampled_from(COLUMNS), value=ROW_VALUES)
def test_a_corrupted_store_row_is_refused_before_training(table_column, value, tmp_path_factory, capsys):
    _store_case(tmp_path_factory.mktemp("store"), capsys, table_column, value)


@pytest.mark.slow
@SLOW
@given(table_column=st.sampled_from(COLUMNS), value=ROW_VALUES)
def test_a_corrupted_store_row_is_refused_before_training_many(table_column, value, tmp_path_factory, capsys):
    _store_case(tmp_path_factory.mktemp("store"), capsys, table_column, value)
