"""The ``ddrank`` command: bad input fails with one clear line and exit code 2 before any training;
listings and protocol inspection print the registries."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from cli_checks import assert_one_line_error, run_cli
from ddrank import __version__
from ddrank.baselines import BASELINES
from ddrank.data.real import DATASETS
from ddrank.data.synthetic import FORMATS
from ddrank.errors import ConfigError, DDRankError, InputError, UnknownNameError
from ddrank.evaluation import evaluate
from ddrank.models import describe_models
from ddrank.protocols import load_protocol, preset_names

CLASSES, IPC = 10, 5  # digits: 10 classes of 1 x 8 x 8 images
FIXTURES = Path(__file__).parent / "fixtures" / "ddranking-configs"


def class_major(ipc: int = IPC) -> torch.Tensor:
    return torch.arange(CLASSES).repeat_interleave(ipc)


def images(n: int = CLASSES * IPC, channels: int = 1, size: int = 8) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(0))


def with_value(value: float) -> torch.Tensor:
    x = images()
    x[7, 0, 3, 4] = value
    return x


def tiny_protocol(**changes: Any) -> dict[str, Any]:
    doc = {
        "name": "tiny",
        "datasets": ["digits"],
        "protocol": {
            "model": "ConvNet-2-W16",
            "augment": {"dsa": "color_crop_cutout_scale_rotate"},
            "epochs": 2,
            "lr_grid": [0.1],
            "rounds": 1,
            "full_data": {"lr": 0.1, "epochs": 1, "batch_size": 128},
        },
    }
    doc["protocol"].update(changes)
    return doc


@dataclass
class Case:
    """A bad input: files to write (tensors as .pt, dicts as YAML), extra CLI flags, the same for the API."""

    id: str
    files: dict[str, Any]
    cli: list[str]
    api: dict[str, Any]
    error: type[DDRankError]
    fragments: tuple[str, ...]
    images: str = "set.pt"


CASES = [
    Case(
        "wrong-rank",
        {"set.pt": torch.zeros(50, 8, 8)},
        [],
        {},
        InputError,
        ("[50, 8, 8] (3-D)", "expected 4-D [N, C, H, W]"),
    ),
    Case(
        "wrong-channels",
        {"set.pt": images(channels=3)},
        [],
        {},
        InputError,
        ("images have 3 channels", "the dataset has 1"),
    ),
    Case(
        "size-without-resize",
        {"set.pt": images(size=16)},
        [],
        {},
        InputError,
        ("images are 16x16 but the protocol uses 8x8", "--resize"),
    ),
    Case(
        "n-not-classes-times-ipc",
        {"set.pt": images(47)},
        [],
        {},
        InputError,
        ("47 images cannot be split evenly over 10 classes",),
    ),
    Case(
        "n-not-classes-times-given-ipc",
        {"set.pt": images(50)},
        ["--ipc", "4"],
        {"ipc": 4},
        InputError,
        ("50 images but 10 classes x IPC 4 = 40",),
    ),
    Case(
        "label-out-of-range",
        {"set.pt": images(), "labels.pt": torch.cat([class_major()[:-1], torch.tensor([10])])},
        ["--labels", "labels.pt"],
        {"labels": "labels.pt"},
        InputError,
        ("label 10 at index 49 is outside [0, 10)", "labels.pt of synthetic set"),
    ),
    Case(
        "negative-label",
        {"set.pt": images(), "labels.pt": torch.cat([torch.tensor([-1]), class_major()[1:]])},
        ["--labels", "labels.pt"],
        {"labels": "labels.pt"},
        InputError,
        ("label -1 at index 0 is outside [0, 10)", "labels.pt of synthetic set"),
    ),
    Case(
        "soft-labels-first-dim",
        {"set.pt": images(), "labels.pt": torch.randn(49, CLASSES)},
        ["--labels", "labels.pt"],
        {"labels": "labels.pt"},
        InputError,
        ("soft labels have shape [49, 10] but there are 50 images", "labels.pt of synthetic set"),
    ),
    Case(
        "soft-labels-width",
        {"set.pt": images(), "labels.pt": torch.randn(50, 9)},
        ["--labels", "labels.pt"],
        {"labels": "labels.pt"},
        InputError,
        ("soft labels have 9 columns but the dataset has 10 classes", "labels.pt of synthetic set"),
    ),
    Case("nan", {"set.pt": with_value(float("nan"))}, [], {}, InputError, ("1 NaN and 0 Inf values",)),
    Case("inf", {"set.pt": with_value(float("-inf"))}, [], {}, InputError, ("0 NaN and 1 Inf values",)),
    Case(
        "empty-class",
        {"set.pt": images(), "labels.pt": torch.where(class_major() == 3, 4, class_major())},
        ["--labels", "labels.pt"],
        {"labels": "labels.pt"},
        InputError,
        ("class 3 has no image", "1 of 10 classes are empty"),
    ),
    Case(
        "bad-ipc",
        {"set.pt": images()},
        ["--ipc", "0"],
        {"ipc": 0},
        InputError,
        ("ipc", "must be a positive integer; got 0"),
    ),
    Case(
        "unknown-dataset",
        {"set.pt": images()},
        ["--dataset", "cifar1"],
        {"dataset": "cifar1"},
        UnknownNameError,
        ("unknown dataset 'cifar1'; did you mean 'cifar10'",),
    ),
    Case(
        "unknown-protocol",
        {"set.pt": images()},
        ["--protocol", "dsaa"],
        {"protocol": "dsaa"},
        UnknownNameError,
        ("unknown protocol 'dsaa'; did you mean 'dsa'",),
    ),
    Case(
        "preset-for-another-dataset",
        {"set.pt": images()},
        ["--protocol", "dsa"],
        {"protocol": "dsa"},
        ConfigError,
        ("protocol 'dsa' is defined for cifar10, cifar100, tinyimagenet, mnist,", "svhn, not 'digits'"),
    ),
    Case(
        "unknown-format",
        {"set.pt": images()},
        ["--format", "datn"],
        {"format": "datn"},
        UnknownNameError,
        ("unknown format 'datn'; did you mean 'datm'",),
    ),
    Case(
        "unknown-model",
        {"set.pt": images(), "proto.yaml": tiny_protocol(model="ConvNett-2")},
        ["--protocol", "proto.yaml"],
        {"protocol": "proto.yaml"},
        UnknownNameError,
        ("unknown model 'ConvNett-2'; did you mean 'ConvNet-2'",),
    ),
    Case(
        "unknown-full-data-model",
        {
            "set.pt": images(),
            "proto.yaml": tiny_protocol(full_data={"model": "ResNet-81", "lr": 0.1, "epochs": 1}),
        },
        ["--protocol", "proto.yaml"],
        {"protocol": "proto.yaml"},
        UnknownNameError,
        ("unknown model 'ResNet-81'; did you mean 'ResNet-18'",),
    ),
    Case(
        "unknown-augmentation",
        {"set.pt": images(), "proto.yaml": tiny_protocol(augment={"dsa": "colr_crop"})},
        ["--protocol", "proto.yaml"],
        {"protocol": "proto.yaml"},
        UnknownNameError,
        ("unknown augmentation family 'colr'; did you mean 'color'",),
    ),
    Case(
        "model-too-deep-for-the-images",
        {"set.pt": images(), "proto.yaml": tiny_protocol(model="ConvNet-4")},
        ["--protocol", "proto.yaml"],
        {"protocol": "proto.yaml"},
        InputError,
        ("ConvNet of depth 4", "8 px images allow a depth of at most 3"),
    ),
    Case(
        "unknown-protocol-key",
        {"set.pt": images(), "proto.yaml": tiny_protocol(epoch=3)},
        ["--protocol", "proto.yaml"],
        {"protocol": "proto.yaml"},
        ConfigError,
        ("protocol 'tiny': epoch: Extra inputs are not permitted",),
    ),
    Case("missing-file", {}, [], {}, InputError, ("nope.pt does not exist",), images="nope.pt"),
    Case(
        "needs-full-unpickling",
        {"set.pt": {"images": images(), "meta": argparse.Namespace(origin="test")}},
        [],
        {},
        InputError,
        ("needs full unpickling", "argparse.Namespace", "--allow-pickle"),
    ),
    Case(
        "real-acc-in-percent",
        {"set.pt": images()},
        ["--real-acc", "90"],
        {"real_acc": 90},
        InputError,
        ("fraction in [0, 1]", "not percentages: 90% is 0.9"),
    ),
    Case(
        "real-acc-not-a-number",
        {"set.pt": images()},
        ["--real-acc", "high"],
        {"real_acc": "high"},
        InputError,
        ("fraction in [0, 1] or 'published', got 'high'",),
    ),
    Case(
        "real-acc-published-without-a-published-value",
        {"set.pt": images()},
        ["--real-acc", "published"],
        {"real_acc": "published"},
        ConfigError,
        ("protocol 'digits' has no published full-data accuracy for 'digits'",),
    ),
]


def write_files(tmp_path: Path, files: dict[str, Any]) -> None:
    for name, content in files.items():
        if name.endswith(".yaml"):
            (tmp_path / name).write_text(yaml.safe_dump(content))
        else:
            torch.save(content, tmp_path / name)


def in_tmp(tmp_path: Path, value: Any) -> Any:
    """File names of the case refer to files in ``tmp_path``."""
    if isinstance(value, str) and value.endswith((".pt", ".yaml")):
        return str(tmp_path / value)
    return value


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_before_training_on_the_command_line(case, tmp_path, capsys, no_training):
    write_files(tmp_path, case.files)
    args = ["evaluate", "--images", in_tmp(tmp_path, case.images), "--device", "cpu", "--no-progress"]
    code, out, err = run_cli(capsys, *args, *(in_tmp(tmp_path, a) for a in case.cli))
    assert_one_line_error(code, err, *case.fragments)
    assert out == ""


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_raises_the_specific_error_in_the_python_api(case, tmp_path, no_training):
    write_files(tmp_path, case.files)
    kwargs = {k: in_tmp(tmp_path, v) for k, v in case.api.items()}
    with pytest.raises(case.error) as caught:
        evaluate(in_tmp(tmp_path, case.images), device="cpu", **kwargs)
    message = " ".join(str(caught.value).split())
    for fragment in case.fragments:
        assert fragment in message, message


def test_in_memory_tensors_are_validated_too(no_training):
    with pytest.raises(InputError, match="images hold 1 NaN and 0 Inf values"):
        evaluate(with_value(float("nan")), device="cpu")
    with pytest.raises(InputError, match="label 12 at index 0 is outside"):
        evaluate(images(), torch.cat([torch.tensor([12]), class_major()[1:]]), device="cpu")


def test_weight_and_rounds_are_checked(capsys, tmp_path, no_training):
    torch.save(images(), tmp_path / "set.pt")
    code, _, err = run_cli(capsys, "evaluate", "--images", tmp_path / "set.pt", "--weight", "1.5")
    assert_one_line_error(code, err, "weight must lie in [0, 1], got 1.5")
    code, _, err = run_cli(capsys, "evaluate", "--images", tmp_path / "set.pt", "--rounds", "0")
    assert_one_line_error(code, err, "argument --rounds: must be a positive integer; got 0")


def test_unknown_subcommand_and_missing_images_are_usage_errors(capsys):
    code, _, err = run_cli(capsys, "evaluat")
    assert_one_line_error(code, err, "invalid choice: 'evaluat'", "see ddrank --help")
    code, _, err = run_cli(capsys, "evaluate")
    assert_one_line_error(code, err, "--images", "--dry-run")


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0
    assert out.strip() == f"ddrank {__version__}"


# --- smoke runs and dry runs ----------------------------------------------------------------------


def dry_run_report(capsys, tmp_path: Path, *flags: Any) -> dict[str, Any]:
    """The --json report of ``ddrank evaluate --dry-run`` with ``flags``."""
    out = tmp_path / "plan.json"
    code, _, err = run_cli(capsys, "evaluate", "--dry-run", "--device", "cpu", "--json", out, *flags)
    assert code == 0, err
    return json.loads(out.read_text())


def test_the_rounds_of_a_smoke_run_stay_out_of_its_protocol_hash(capsys, tmp_path):
    full = dry_run_report(capsys, tmp_path, "--ipc", "10")
    preset = load_protocol("digits", dataset="digits", ipc=10)
    assert full["protocol"]["content_hash"] == preset.content_hash()
    assert dry_run_report(capsys, tmp_path, "--ipc", "10", "--rounds", "2")["protocol"] == full["protocol"]
    for smoke in (["--quick"], ["--epochs", "3"]):
        alone = dry_run_report(capsys, tmp_path, "--ipc", "10", *smoke)
        assert alone["rounds"] == 2 and alone["protocol"]["content_hash"] != full["protocol"]["content_hash"]
        for rounds in (2, 3):
            given = dry_run_report(capsys, tmp_path, "--ipc", "10", *smoke, "--rounds", rounds)
            assert given["rounds"] == rounds
            assert given["protocol"]["content_hash"] == alone["protocol"]["content_hash"], smoke


def test_a_smoke_run_shortens_the_whole_data_student_too(capsys, tmp_path):
    full_data = load_protocol("digits", dataset="digits", ipc=10).full_data
    for flags, students, whole in ((["--epochs", "3"], 3, 3), (["--quick"], 30, full_data.epochs // 10)):
        report = dry_run_report(capsys, tmp_path, "--ipc", "10", *flags)
        epochs = {cell["cell"]: cell["epochs"] for cell in report["plan"]["cells"]}
        assert epochs == {"syn": students, "random": students, "real": whole}, flags
        assert report["protocol"]["full_data"]["epochs"] == whole
        assert f"{whole} epochs, batch {full_data.batch_size}" in report["full_data"]["source"]


def test_a_smoke_run_keeps_the_fidelity_asked_for(capsys, tmp_path):
    flags = ["--dataset", "cifar10", "--protocol", "dc", "--ipc", "10", "--fidelity", "reference"]
    report = dry_run_report(capsys, tmp_path, *flags, "--quick")
    assert report["fidelity"] == "reference" and report["protocol"]["selection"] == "reference"


@pytest.mark.parametrize(
    "students, fragment",
    [
        ("", "--students takes a comma-separated list of model names (e.g. ConvNet-3,MLP), got ''"),
        ("MLP,,ConvNet-2-W16", "--students 'MLP,,ConvNet-2-W16' has an empty model name"),
        ("MLP,", "--students 'MLP,' has an empty model name"),
        ("MLP,MLP", "--students 'MLP,MLP' names MLP twice; give each student once"),
        ("mlp,ConvNet-2-W16,MLP", "names MLP twice ('mlp' and 'MLP'); give each student once"),
    ],
)
def test_students_refuses_an_empty_list_an_empty_name_and_a_student_named_twice(students, fragment, capsys):
    code, out, err = run_cli(capsys, "evaluate", "--dry-run", "--ipc", "10", "--students", students)
    assert_one_line_error(code, err, fragment)
    assert out == ""


def test_a_dry_run_refuses_a_set_the_run_would_refuse(capsys, tmp_path, no_training):
    torch.save({"images": images(), "labels": class_major()}, tmp_path / "set.pt")  # digits, IPC 5
    refused = []
    for flags in (["--ipc", "9"], ["--ipc", "9", "--dry-run"], ["--dataset", "cifar10", "--dry-run"]):
        code, out, err = run_cli(capsys, "evaluate", "--images", tmp_path / "set.pt", *flags)
        assert code == 2 and out == ""
        refused.append(err)
    assert refused[0] == refused[1]  # the run's own refusal
    assert_one_line_error(2, refused[1], "ipc=9 was given but the labels hold 5 images per class")
    assert_one_line_error(2, refused[2], "images have 1 channels (shape [50, 1, 8, 8]) but the dataset has 3")


def test_a_dry_run_checks_a_set_without_reading_the_dataset(capsys, tmp_path, monkeypatch):
    def unread(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a dry run read the real dataset")

    monkeypatch.setattr("ddrank.evaluation.evaluator.load_real", unread)
    torch.save(255 * torch.rand(100, 3, 32, 32), tmp_path / "x.pt")  # 0..255 floats: a warning
    args = ["evaluate", "--images", tmp_path / "x.pt", "--dataset", "cifar10", "--dry-run"]
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and "cifar10 · IPC 10 · lrs" in out
    assert "ddrank: warning: synthetic set " in err and "x.pt: values span" in err
    code, out, err = run_cli(capsys, *args, "--strict")
    assert_one_line_error(code, err, "look like 0..255 pixels stored as floats", "refused by --strict")
    assert out == ""


# --- listings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, names",
    [
        ("models", [pattern for pattern, _ in describe_models()]),
        ("datasets", DATASETS.names()),
        ("protocols", preset_names()),
        ("formats", FORMATS.names()),
        ("baselines", BASELINES.names()),
    ],
)
def test_list_prints_every_registered_name(kind, names, capsys):
    code, out, err = run_cli(capsys, "list", kind)
    assert code == 0 and err == ""
    listed = out.split("\n")
    assert listed[0].strip() == kind
    second = listed[1].index(listed[1].split()[1])  # where the column after the names starts
    names_column = "".join(line[:second].strip() for line in listed[3:])  # a long name folds
    for name in names:
        assert name in names_column, f"{name} missing from:\n{out}"


def test_list_has_the_expected_entries(capsys):
    _, out, _ = run_cli(capsys, "list", "baselines")
    assert all(m in out for m in ("noise", "random", "herding", "kcenter", "dm"))
    _, out, _ = run_cli(capsys, "list", "protocols")
    assert all(p in out for p in ("dc", "dsa", "dm", "mtt", "digits"))
    header, _, first, *rest = out.splitlines()[1:]  # d4m's row: its datasets cell wraps in its column
    row = [first, *rest[: next(i for i, line in enumerate(rest) if not line.startswith(" "))]]
    cell = " ".join(line[header.index("datasets") : header.index("evaluation")].strip() for line in row)
    assert cell.startswith("cifar10, cifar100, tinyimagenet")
    _, out, _ = run_cli(capsys, "list", "datasets")
    assert all(d in out for d in ("digits", "cifar10", "cifar100", "tinyimagenet", "imagefolder"))
    _, out, _ = run_cli(capsys, "list", "models")
    assert "ConvNet" in out and "ResNet" in out


def test_list_rejects_an_unknown_kind(capsys):
    code, _, err = run_cli(capsys, "list", "widgets")
    assert_one_line_error(code, err, "argument kind: invalid choice: 'widgets'")


# --- protocol show --------------------------------------------------------------------------------


def test_protocol_show_prints_the_hash_and_the_resolved_fields(capsys):
    code, out, err = run_cli(capsys, "protocol", "show", "dsa", "--dataset", "cifar10")
    assert code == 0 and err == ""
    expected = load_protocol("dsa", dataset="cifar10")
    header, body = out.split("\n", 1)
    assert header == f"# dsa v1, fidelity honest, hash {expected.content_hash()}"
    comments = " ".join(line[2:] for line in body.splitlines() if line.startswith("# "))  # wrapped at 80
    resolved = "resolved for dataset cifar10, any IPC (--ipc picks one)"
    assert comments == f"{resolved} reproduces: {expected.reference_source}"
    shown = yaml.safe_load(body)
    assert shown == expected.model_dump(mode="json")
    assert shown["model"] == "ConvNet-3" and shown["dataset"] == "cifar10"
    assert shown["full_data"]["published_acc"] == 0.848
    code, out, _ = run_cli(
        capsys, "protocol", "show", "dsa", "--dataset", "cifar10", "--fidelity", "reference"
    )
    reference = load_protocol("dsa", dataset="cifar10", fidelity="reference")
    assert code == 0 and out.startswith(f"# dsa v1, fidelity reference, hash {reference.content_hash()}\n")
    assert reference.content_hash() != expected.content_hash()
    assert yaml.safe_load(out)["selection"] == "reference"


def test_protocol_show_reads_ddranking_files_and_says_when_no_reference_is_published(capsys):
    config = FIXTURES / "eval" / "DATM" / "CIFAR100" / "IPC10.yaml"
    code, out, err = run_cli(capsys, "protocol", "show", config)
    assert code == 0 and err == ""
    shown = yaml.safe_load(out)
    assert shown["fidelity"] == "reference" and shown["model"] == "ConvNet-3" and shown["stats"] == "cifar10"
    assert "DD-Ranking v0.2.0" in shown["reference_source"]
    code, out, _ = run_cli(capsys, "protocol", "show", "edc", "--dataset", "cifar10")
    assert code == 0 and "# reproduces: no published reference\n" in out
    assert yaml.safe_load(out)["reference_source"] == "no published reference"


def test_protocol_show_applies_dataset_overrides_and_canonical_dataset_names(capsys):
    _, tiny, _ = run_cli(capsys, "protocol", "show", "dsa", "--dataset", "tinyimagenet")
    assert yaml.safe_load(tiny.split("\n", 1)[1])["model"] == "ConvNet-4"
    _, spelled, _ = run_cli(capsys, "protocol", "show", "DSA", "--dataset", "CIFAR-10")
    _, plain, _ = run_cli(capsys, "protocol", "show", "dsa", "--dataset", "cifar10")
    assert spelled == plain
    assert tiny.split("\n")[0] != plain.split("\n")[0]  # different hash


def test_protocol_show_says_what_it_resolved_for_and_resolves_a_preset_for_its_first_dataset(capsys):
    _, default, _ = run_cli(capsys, "protocol", "show", "dc")
    _, named, _ = run_cli(capsys, "protocol", "show", "dc", "--dataset", "cifar10")
    cifar10 = load_protocol("dc", dataset="cifar10")
    comments = [line for line in default.splitlines() if line.startswith("# ")]
    assert comments[0] == f"# dc v1, fidelity honest, hash {cifar10.content_hash()}"
    assert " ".join(line[2:] for line in comments[1:]).startswith(
        "resolved for dataset cifar10 (its first; --dataset picks another), any IPC (--ipc picks one) "
        f"reproduces: {cifar10.reference_source}"
    )
    assert yaml.safe_load(default) == yaml.safe_load(named) == cifar10.model_dump(mode="json")
    _, ipc, _ = run_cli(capsys, "protocol", "show", "dc", "--dataset", "cifar10", "--ipc", "10")
    assert "# resolved for dataset cifar10, IPC 10\n" in ipc
    _, digits, _ = run_cli(capsys, "protocol", "show", "digits")
    assert digits.startswith(f"# digits v1, fidelity honest, hash {load_protocol('digits').content_hash()}\n")
    assert "# resolved for dataset digits, any IPC (--ipc picks one)\n" in digits


def test_protocol_show_errors(capsys):
    code, _, err = run_cli(capsys, "protocol", "show", "dsa", "--dataset", "digits")
    assert_one_line_error(code, err, "protocol 'dsa' is defined for cifar10, cifar100, tinyimagenet")
    code, _, err = run_cli(capsys, "protocol", "show", "dmm")
    assert_one_line_error(code, err, "unknown protocol 'dmm'; did you mean 'dm'")
    code, _, err = run_cli(capsys, "protocol", "show", "dsa", "--dataset", "cifar-100x")
    assert_one_line_error(code, err, "unknown dataset 'cifar-100x'")


# --- baseline -------------------------------------------------------------------------------------


def test_baseline_writes_a_safe_class_major_set(capsys, tmp_path):
    out_file = tmp_path / "sets" / "herding.pt"
    code, out, _ = run_cli(capsys, "baseline", "herding", "--ipc", "2", "--out", out_file)
    assert code == 0 and "wrote" in out
    saved = torch.load(out_file, weights_only=True)
    assert saved["images"].shape == (20, 1, 8, 8)
    assert torch.equal(saved["labels"], class_major(2))
    code, _, err = run_cli(capsys, "baseline", "herdin", "--ipc", "2", "--out", out_file)
    assert_one_line_error(code, err, "unknown baseline 'herdin'; did you mean 'herding'")
    code, _, err = run_cli(capsys, "baseline", "random", "--ipc", "0", "--out", out_file)
    assert_one_line_error(code, err, "argument --ipc: must be a positive integer; got 0")
