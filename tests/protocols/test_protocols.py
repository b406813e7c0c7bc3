"""Protocol presets and files: resolution per dataset and IPC, overrides, hashing and validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ddrank.errors import ConfigError, UnknownNameError
from ddrank.protocols import Protocol, load_protocol, preset, preset_names
from ddrank.protocols.protocol import ScheduleSpec

SHIPPED = ("dc", "dsa", "dm", "mtt", "digits")


def write_yaml(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_every_expected_preset_ships():
    assert set(SHIPPED) <= set(preset_names())
    assert len(set(preset_names())) == len(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_resolves_for_each_dataset_and_ipc(name):
    doc = preset(name)
    assert doc["datasets"], f"preset {name} names no dataset"
    for dataset in doc["datasets"]:
        hashes = set()
        for ipc in (None, 1, 10, 50):
            proto = load_protocol(name, dataset=dataset, ipc=ipc)
            assert isinstance(proto, Protocol)
            assert (proto.name, proto.dataset, proto.ipc) == (name, dataset, ipc)
            assert proto.labels.mode in ("hard", "S", "M")
            assert proto.selection == "honest" and not proto.optimistic
            assert proto.description == doc["description"]
            assert proto.lr_grid and all(lr > 0 for lr in proto.lr_grid)
            # resolving twice gives the same hash: nothing depends on call order or time
            assert load_protocol(name, dataset=dataset, ipc=ipc).content_hash() == proto.content_hash()
            hashes.add(proto.content_hash())
        assert len(hashes) == 4, "the IPC is part of what a protocol hash identifies"


@pytest.mark.parametrize("name", ["dc", "dsa", "dm", "mtt"])
def test_reference_presets_encode_the_published_settings(name):
    cifar = load_protocol(name, dataset="cifar10")
    assert cifar.model == "ConvNet-3"
    assert (cifar.epochs, cifar.batch_size) == (1000, 256)
    assert cifar.optimizer.name == "sgd" and cifar.optimizer.momentum == 0.9
    assert cifar.optimizer.weight_decay == 0.0005
    assert cifar.schedule == ScheduleSpec(kind="step", milestones=(0.5,), gamma=0.1)
    assert cifar.lr_grid == (0.001, 0.005, 0.01, 0.05, 0.1)
    assert cifar.augment.enabled == (name != "dc")
    assert (cifar.full_data.lr, cifar.full_data.epochs, cifar.full_data.batch_size) == (0.01, 200, 512)
    assert cifar.full_data.published_acc == 0.848
    assert "84.8" in cifar.full_data.published_source
    assert load_protocol(name, dataset="cifar100").full_data.published_acc == 0.562
    tiny = load_protocol(name, dataset="tinyimagenet")
    assert tiny.model == "ConvNet-4"
    assert tiny.full_data.epochs == 100 and tiny.full_data.published_acc == 0.376


def test_dsa_on_tinyimagenet_uses_convnet4_and_only_there():
    assert load_protocol("dsa", dataset="tinyimagenet").model == "ConvNet-4"
    assert load_protocol("dsa", dataset="cifar100").model == "ConvNet-3"
    assert load_protocol("dsa").model == "ConvNet-3"  # no dataset: the base protocol
    assert load_protocol("dsa").dataset == "cifar10"


def test_digits_preset_has_no_published_value():
    proto = load_protocol("digits", dataset="digits")
    assert proto.full_data.published_acc is None
    assert proto.model == "ConvNet-2-W16"


def test_preset_names_are_case_insensitive_with_close_matches():
    assert load_protocol("DSA", dataset="cifar10") == load_protocol("dsa", dataset="cifar10")
    with pytest.raises(UnknownNameError, match="unknown protocol 'dsaa'; did you mean 'dsa'"):
        load_protocol("dsaa")
    with pytest.raises(UnknownNameError) as caught:
        load_protocol("nothing-like-it")
    assert "did you mean" not in str(caught.value)
    assert all(name in str(caught.value) for name in ("dc", "digits", "dm", "dsa"))


def test_preset_for_the_wrong_dataset_is_refused():
    with pytest.raises(
        ConfigError, match="protocol 'dsa' is defined for cifar10, cifar100, tinyimagenet, mnist, .*, not"
    ):
        load_protocol("dsa", dataset="digits")
    with pytest.raises(ConfigError, match="protocol 'digits' is defined for digits, not 'cifar10'"):
        load_protocol("digits", dataset="cifar10")


# --- hashing --------------------------------------------------------------------------------------


def test_content_hash_is_stable_and_ignores_name_and_description(tmp_path):
    base = {"name": "one", "description": "first", "protocol": {"model": "ConvNet-3", "epochs": 10}}
    first = load_protocol(write_yaml(tmp_path / "a.yaml", base), dataset="cifar10")
    renamed = dict(base, name="two", description="second")
    second = load_protocol(write_yaml(tmp_path / "b.yaml", renamed), dataset="cifar10")
    assert len(first.content_hash()) == 16
    assert first.content_hash() == second.content_hash()
    # the same text always hashes the same
    assert first.content_hash() == load_protocol(tmp_path / "a.yaml", dataset="cifar10").content_hash()


@pytest.mark.parametrize(
    "change",
    [
        {"epochs": 11},
        {"model": "ConvNet-4"},
        {"lr_grid": [0.01]},
        {"batch_size": 128},
        {"selection": "reference"},
        {"augment": {"dsa": "color"}},
        {"optimizer": {"weight_decay": 0.0}},
        {"schedule": {"kind": "cosine"}},
        {"full_data": {"epochs": 3}},
        {"rounds": 3},
        {"val_fraction": 0.2},
        {"version": 2},
    ],
    ids=lambda c: next(iter(c)),
)
def test_changing_one_field_changes_the_hash(change, tmp_path):
    base = {"name": "p", "protocol": {"model": "ConvNet-3", "epochs": 10}}
    changed = {"name": "p", "protocol": {"model": "ConvNet-3", "epochs": 10}}
    if "version" in change:
        changed["version"] = change["version"]
    else:
        changed["protocol"] |= change
    a = load_protocol(write_yaml(tmp_path / "a.yaml", base))
    b = load_protocol(write_yaml(tmp_path / "b.yaml", changed))
    assert a.content_hash() != b.content_hash()


def test_with_overrides_validates_and_rehashes():
    proto = load_protocol("digits")
    quick = proto.with_overrides(epochs=20, lr_grid=[0.05], rounds=2)
    assert (quick.epochs, quick.lr_grid, quick.rounds) == (20, (0.05,), 2)
    assert quick.content_hash() != proto.content_hash()
    assert quick.with_overrides(epochs=proto.epochs, lr_grid=proto.lr_grid, rounds=proto.rounds) == proto
    same = quick.with_overrides(full_data=quick.full_data)
    assert same.content_hash() == quick.content_hash()
    with pytest.raises(ConfigError, match="selection: Input should be 'honest' or 'reference'"):
        proto.with_overrides(selection="best")
    with pytest.raises(ConfigError, match="lr_grid needs at least one positive learning rate"):
        proto.with_overrides(lr_grid=[0.01, -0.1])


# --- protocol files -------------------------------------------------------------------------------


def test_flat_protocol_file_keeps_its_metadata(tmp_path):
    path = write_yaml(
        tmp_path / "mine.yaml",
        {"version": 3, "description": "mine", "datasets": ["digits"], "model": "ConvNet-2", "epochs": 5},
    )
    proto = load_protocol(path, dataset="digits", ipc=10)
    assert (proto.name, proto.version, proto.description) == ("mine", 3, "mine")
    assert (proto.model, proto.epochs, proto.dataset, proto.ipc) == ("ConvNet-2", 5, "digits", 10)
    with pytest.raises(ConfigError, match="defined for digits, not 'cifar10'"):
        load_protocol(path, dataset="cifar10")


def test_preset_format_file_applies_its_overrides(tmp_path):
    doc = {
        "name": "two-step",
        "datasets": ["digits", "cifar10"],
        "protocol": {"model": "ConvNet-2", "epochs": 5},
        "overrides": [
            {"when": {"dataset": "cifar10"}, "set": {"model": "ConvNet-3"}},
            {"when": {"ipc": [10, 50]}, "set": {"epochs": 7, "optimizer": {"momentum": 0.5}}},
        ],
    }
    path = write_yaml(tmp_path / "p.yaml", doc)
    assert load_protocol(path, dataset="digits", ipc=1).model == "ConvNet-2"
    both = load_protocol(path, dataset="cifar10", ipc=50)
    assert (both.model, both.epochs, both.optimizer.momentum) == ("ConvNet-3", 7, 0.5)
    assert both.optimizer.weight_decay == 0.0005  # nested overrides merge, they do not replace


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"model": "ConvNet-3", "epoch": 10}, "protocol 'bad': epoch: Extra inputs are not permitted"),
        (
            {"model": "ConvNet-3", "optimizer": {"nme": "sgd"}},
            "protocol 'bad': optimizer.nme: Extra inputs are not permitted",
        ),
        (
            {"model": "ConvNet-3", "lr_grid": [0.01, 0.0]},
            "lr_grid: Value error, lr_grid needs at least one positive learning rate",
        ),
        ({"model": "ConvNet-3", "lr_grid": []}, "lr_grid needs at least one positive learning rate"),
        ({"model": "ConvNet-3", "lr": -0.1}, "protocol 'bad': lr: Input should be greater than 0"),
        ({"model": "ConvNet-3", "selection": "best"}, "selection: Input should be 'honest' or 'reference'"),
        ({"model": "ConvNet-3", "epochs": 0}, "epochs: Input should be greater than or equal to 1"),
        ({"model": "ConvNet-3", "schedule": {"milestones": [1.5]}}, "milestones are fractions of the epochs"),
        (
            {"model": "ConvNet-3", "labels": {"mode": "hard", "loss": "kl"}},
            "hard labels train with loss 'ce', not 'kl'",
        ),
        ({"epochs": 3}, "protocol 'bad': model: Field required"),
        (
            {"name": "bad", "protocol": {"model": "ConvNet-3"}, "overides": []},
            "protocol 'bad': unknown key 'overides'",
        ),
        (
            {"name": "bad", "protocol": {"model": "ConvNet-3"}, "overrides": [{"if": {"ipc": 1}}]},
            "protocol 'bad': override: unknown key 'if'",
        ),
        (
            {"name": "bad", "protocol": {"model": "ConvNet-3"}, "overrides": [{"when": {"ipcs": 1}}]},
            "override condition on unknown field 'ipcs'",
        ),
        (
            {"model": "ConvNet-3", "dataset": "cifar100"},
            "protocol 'bad' sets dataset 'cifar100', not 'cifar10'",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
def test_invalid_protocol_files_raise_config_errors(doc, message, tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", doc)
    with pytest.raises(ConfigError) as caught:
        load_protocol(path, dataset="cifar10", ipc=10)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_protocol_file_problems(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_protocol(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_protocol(write_yaml(tmp_path / "list.yaml", [1, 2]))  # type: ignore[arg-type]


def test_reference_selection_is_optimistic():
    proto = load_protocol("digits").with_overrides(selection="reference")
    assert proto.optimistic and not load_protocol("digits").optimistic
