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
DDRANKING_CONFIGS = Path(__file__).parents[1] / "fixtures" / "ddranking-configs"


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
        {"selection": "reference", "fidelity": "reference"},
        {"schedule": {"kind": "cosine", "period": 2.0}},
        {"random_data": "image"},
        {"test_transforms": [{"name": "resize", "size": 36}, {"name": "center_crop", "size": 32}]},
        {"lr_search": {"random": "auto"}},
        {
            "labels": {"mode": "M", "loss": "kl", "teachers": ["ConvNet-3"], "temperature": 4.0},
            "hard_augment": "transforms",
        },
        {"full_data": {"source": "published", "published_acc": 0.5, "published_source": "a paper"}},
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
            "lr_grid: lr_grid needs at least one positive learning rate",
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
    proto = load_protocol("digits").with_overrides(selection="reference", fidelity="reference")
    assert proto.optimistic and not load_protocol("digits").optimistic
    assert load_protocol("digits").with_overrides(selection="reference").fidelity == "reference"
    with pytest.raises(ConfigError, match="fidelity 'honest' selects on a validation split"):
        load_protocol("digits").with_overrides(selection="reference", fidelity="honest")


# --- schedules --------------------------------------------------------------------------------------


def _lambda_lrs(schedule_lambda, epochs: int) -> list[float]:
    """The lr of every epoch under torch's LambdaLR stepped once per epoch, as DD-Ranking steps it."""
    import torch

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_lambda)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_half_period_cosine_is_ddrankings_lambda():
    import math

    epochs = 300
    half = ScheduleSpec(kind="cosine", period=2.0)
    reference = _lambda_lrs(
        lambda step: 0.5 * (1.0 + math.cos(math.pi * step / epochs / 2)) if step <= epochs else 0, epochs
    )
    assert [half.factor(e, epochs) for e in range(epochs)] == pytest.approx(reference)
    assert half.factor(0, epochs) == 1.0
    assert half.factor(150, epochs) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert half.factor(epochs - 1, epochs) == pytest.approx(0.5, abs=0.01)  # ends at half the lr
    full = ScheduleSpec(kind="cosine")
    assert full.factor(150, epochs) == pytest.approx(0.5) and full.factor(epochs - 1, epochs) < 1e-3


def test_cosine_horizon_stops_at_zero_as_lambda_lr_does():
    import math

    # REAL_DATA_TRAINING_CONFIG's TinyImageNet ResNet-18 cosine over 100 epochs, stepped for 300.
    horizon = ScheduleSpec(kind="cosine", period=2.0, horizon=100)
    reference = _lambda_lrs(
        lambda step: 0.5 * (1.0 + math.cos(math.pi * step / 100 / 2)) if step <= 100 else 0, 300
    )
    assert [horizon.factor(e, 300) for e in range(300)] == pytest.approx(reference)
    assert horizon.factor(100, 300) == pytest.approx(0.5) and horizon.factor(101, 300) == 0.0


def test_step_milestones_reproduce_step_lr():
    import torch

    from ddrank.compat.ddranking_config import _step_schedule

    for step, epochs in ((500, 1000), (100, 1000), (100, 500), (50, 300), (30, 90)):
        schedule = ScheduleSpec(**_step_schedule(step, epochs))
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([param], lr=1.0)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=0.1)
        for epoch in range(epochs):
            assert schedule.factor(epoch, epochs) == pytest.approx(optimizer.param_groups[0]["lr"]), (
                step,
                epoch,
            )
            optimizer.step()
            scheduler.step()


def test_period_and_horizon_belong_to_cosine():
    with pytest.raises(ValueError, match="period and horizon apply to cosine schedules only"):
        ScheduleSpec(kind="step", period=2.0)


# --- bounds -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"epochs": 10**12},
            "epochs: 1000000000000 exceeds the limit of 10000 epochs (set DDRANK_MAX_EPOCHS",
        ),
        ({"batch_size": 10**9}, "batch_size: 1000000000 exceeds the limit of 65536 images per batch"),
        ({"lr": 1e30}, "lr: learning rate 1e+30 is above the sanity bound 10"),
        ({"lr": float("inf")}, "lr: Input should be a finite number"),
        ({"lr_grid": [0.01, float("nan")]}, "lr_grid.1: Input should be a finite number"),
        ({"lr_grid": [0.001] * 100}, "exceeds the limit of 64 learning rates in lr_grid"),
        ({"rounds": 10**6}, "rounds: 1000000 exceeds the limit of 100 rounds (set DDRANK_MAX_ROUNDS"),
        ({"ipc": 10**7}, "ipc: 10000000 exceeds the limit of 10000 images per class"),
        ({"full_data": {"epochs": 10**9}}, "full_data.epochs: 1000000000 exceeds the limit of 10000 epochs"),
        ({"full_data": {"lr": 1e30}}, "full_data.lr: learning rate 1e+30 is above the sanity bound"),
        (
            {"schedule": {"kind": "cosine", "horizon": 10**9}},
            "schedule.horizon: 1000000000 exceeds the limit",
        ),
        ({"optimizer": {"weight_decay": 1e9}}, "weight decay 1e+09 is above the sanity bound 1"),
        (
            {"labels": {"mode": "M", "loss": "kl", "teachers": ["ConvNet-3"] * 300}},
            "labels.teachers: 300 exceeds the limit of 32 teachers (set DDRANK_MAX_TEACHERS",
        ),
        (
            {"labels": {"mode": "M", "loss": "kl", "teachers": ["ConvNet-3"], "temperature": 1e9}},
            "temperature",
        ),
    ],
    ids=lambda v: None if isinstance(v, str) else str(next(iter(v))),
)
def test_values_that_allocate_or_run_forever_are_refused(fields, message, tmp_path):
    path = write_yaml(tmp_path / "big.yaml", {"model": "ConvNet-3", **fields})
    with pytest.raises(ConfigError) as caught:
        load_protocol(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_count_limits_are_raised_by_environment_variables(tmp_path, monkeypatch):
    path = write_yaml(tmp_path / "long.yaml", {"model": "ConvNet-3", "epochs": 15000})
    with pytest.raises(ConfigError, match="DDRANK_MAX_EPOCHS"):
        load_protocol(path)
    monkeypatch.setenv("DDRANK_MAX_EPOCHS", "20000")
    assert load_protocol(path).epochs == 15000
    monkeypatch.setenv("DDRANK_MAX_EPOCHS", "many")
    with pytest.raises(ConfigError, match="DDRANK_MAX_EPOCHS='many' must be a positive integer"):
        load_protocol(path)


# --- unreadable files -------------------------------------------------------------------------------


UNREADABLE = [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is a binary file, not YAML or JSON text"),
    (b"model: ConvNet-3\nepochs: \xff\xfe\n", "is not UTF-8 text"),
    (b"model: ConvNet-3\n\tepochs: 3\n", "indent with spaces, not tabs"),
    (b"model: [ConvNet-3\nepochs: 3\n", "invalid YAML at line"),
    (b"model: !!python/object/apply:os.system ['echo unsafe']\n", "is not plain YAML"),
    (b"a: &a [1, 2]\nb: [" + b", ".join([b"*a"] * 300) + b"]\n", "more than 256 aliases"),
]


@pytest.mark.parametrize(("content", "fragment"), UNREADABLE, ids=lambda v: v if isinstance(v, str) else None)
def test_unreadable_files_are_one_line_config_errors(content, fragment, tmp_path):
    from ddrank.compat import Config

    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    for read in (load_protocol, Config.from_file):
        with pytest.raises(ConfigError) as caught:
            read(path)
        assert fragment in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
        assert str(path) in str(caught.value)


def test_invalid_json_is_a_config_error(tmp_path):
    from ddrank.compat import Config

    path = tmp_path / "config.json"
    path.write_text('{"dataset": "CIFAR10",')
    with pytest.raises(ConfigError, match="invalid JSON at line 1"):
        Config.from_file(path)


# --- DD-Ranking files, fidelity and cell conventions ----------------------------------------------


def test_load_protocol_translates_a_ddranking_configuration():
    path = DDRANKING_CONFIGS / "eval" / "DM" / "CIFAR10" / "IPC10.yaml"
    proto = load_protocol(path)
    assert (proto.fidelity, proto.selection, proto.eval_every) == ("reference", "reference", 10)
    assert (proto.dataset, proto.ipc, proto.model) == ("cifar10", 10, "ConvNet-3")
    assert load_protocol(path, fidelity="honest").selection == "honest"
    with pytest.raises(ConfigError, match="is for dataset 'cifar10', not 'cifar100'"):
        load_protocol(path, dataset="cifar100")
    with pytest.raises(ConfigError, match="fidelity must be 'reference' or 'honest', not 'exact'"):
        load_protocol(path, fidelity="exact")


def test_learning_rates_per_kind_of_run():
    grid = (0.001, 0.005, 0.01, 0.05, 0.1)
    fixed = load_protocol("digits").with_overrides(lr=0.002, lr_grid=grid)
    assert fixed.learning_rates("syn", set_lr=0.03) == (0.03,)  # the set's own lr first
    assert fixed.learning_rates("syn") == (0.002,)  # else the method's lr
    assert fixed.learning_rates("random") == grid and fixed.learning_rates("hard", set_lr=0.03) == grid
    assert fixed.with_overrides(use_set_lr=False).learning_rates("syn", set_lr=0.03) == (0.002,)
    searched = fixed.with_overrides(lr_search={"syn": "grid", "random": "auto", "hard": "auto"})
    assert searched.learning_rates("syn", set_lr=0.03) == grid
    assert searched.learning_rates("random", set_lr=0.03) == (0.002,)  # random subsets never ship an lr
    assert searched.learning_rates("hard", set_lr=0.03) == (0.03,)


def test_augmentation_and_test_transforms_per_cell_variant():
    proto = load_protocol("rded", dataset="tinyimagenet", ipc=10, fidelity="reference")
    assert proto.hard_augment == "transforms"
    assert proto.augment_for("P").cutmix == 1.0
    hard = proto.augment_for("hard")  # use_aug_for_hard false: custom_train_trans only, no aug_func
    assert hard.transforms == proto.augment.transforms and not hard.mixes and hard.dsa is None
    assert not proto.augment_for("noaug").enabled and proto.augment_for("full") == proto.full_data.augment
    steps = ({"name": "resize", "size": 72}, {"name": "center_crop", "size": 64})
    assert proto.test_transforms_for("P") == steps == proto.test_transforms_for("noaug")
    assert proto.test_transforms_for("hard") == () == proto.test_transforms_for("full")
    with pytest.raises(ConfigError, match="is not one of"):
        proto.with_overrides(test_transforms=[{"name": "random_crop", "size": 64}])


def test_reference_refuses_what_ddranking_cannot_run():
    dc = load_protocol("dc", dataset="cifar10", fidelity="reference")
    assert "AugmentationRobustScore crashes with hard labels" in dc.reference_refusal("ars")
    assert dc.reference_refusal("lrs") is None
    assert load_protocol("dc", dataset="cifar10").reference_refusal("ars") is None  # honest runs it
    sre2l = load_protocol("sre2l", dataset="cifar10", fidelity="reference")
    assert sre2l.reference_refusal("ars") is None
    stepped = sre2l.with_overrides(schedule={"kind": "step"})
    assert "no step_size" in stepped.reference_refusal("ars")


def test_metric_deviations_of_broken_ddranking_paths():
    datm = load_protocol("datm", dataset="cifar10", ipc=10, fidelity="reference")
    lrs = {d.key: d for d in datm.deviations_for("lrs")}
    assert lrs["random_data_format"].kind == lrs["soft_label_mode"].kind == "repaired"
    assert "metric" in {d.key for d in datm.deviations_for("acc")}
    assert "scores" in lrs and "scores" not in {d.key for d in datm.deviations_for("acc")}  # no exp() there
    dm = load_protocol("dm", dataset="cifar10", fidelity="reference")
    assert "random_data_format" not in {d.key for d in dm.deviations_for("lrs")}  # the hard class works
    assert dm.deviations_for("lrs")[-1].key == "results"  # ... until it saves its results


def test_a_protocol_file_that_selects_on_the_test_set_is_a_reference_protocol(tmp_path):
    path = write_yaml(
        tmp_path / "mine.yaml", {"model": "ConvNet-3", "selection": "reference", "eval_every": 5}
    )
    proto = load_protocol(path)
    assert (proto.fidelity, proto.selection, proto.eval_every) == ("reference", "reference", 5)
    assert load_protocol(path, fidelity="reference") == proto
    with pytest.raises(ConfigError, match="declares fidelity 'reference' and has no 'honest' form"):
        load_protocol(path, fidelity="honest")


def test_every_difference_between_the_forms_needs_a_reason(tmp_path):
    doc = {
        "name": "mine",
        "datasets": ["cifar10"],
        "protocol": {"model": "ConvNet-3", "epochs": 10},
        "reference": {"batch_size": 64},
    }
    path = write_yaml(tmp_path / "mine.yaml", doc)
    assert load_protocol(path, fidelity="reference").batch_size == 64
    with pytest.raises(
        ConfigError, match="differs from the reference form in 'batch_size' with no stated reason"
    ):
        load_protocol(path)
    doc["reasons"] = {"batch_size": "my reason"}
    honest = load_protocol(write_yaml(tmp_path / "mine.yaml", doc))
    changed = next(d for d in honest.deviations if d.key == "batch_size")
    assert (changed.source_value, changed.ddrank_value, changed.reason) == (
        "batch_size=64",
        "batch_size=256",
        "my reason",
    )
    assert (
        changed.line() == "batch_size: source batch_size=64 → ddrank batch_size=256 [moves scores]: my reason"
    )


def test_fidelity_is_part_of_the_hash_and_metadata_is_not():
    honest = load_protocol("dm", dataset="cifar10", ipc=10)
    reference = load_protocol("dm", dataset="cifar10", ipc=10, fidelity="reference")
    assert honest.content_hash() != reference.content_hash()
    relabelled = honest.with_overrides(fidelity="reference", selection="reference")
    assert relabelled.content_hash() != honest.content_hash()
    described = honest.with_overrides(sources={}, deviations=[], reference_source=None, description="x")
    assert described.content_hash() == honest.content_hash()
    # fields a protocol never reads do not change its hash: eval_every under honest selection
    assert honest.with_overrides(eval_every=7).content_hash() == honest.content_hash()


def test_a_protocol_saved_from_protocol_show_keeps_its_sources_and_deviations(tmp_path, capsys):
    """protocol show prints a flat file; loaded again it is the same protocol, sources and declared
    deviations included (they were dropped, so a saved MTT protocol no longer said its dist deviation)."""
    from ddrank.cli import main

    assert (
        main(["protocol", "show", "mtt", "--dataset", "cifar10", "--ipc", "10", "--fidelity", "reference"])
        == 0
    )
    (tmp_path / "mtt.yaml").write_text(capsys.readouterr().out)
    shipped = load_protocol("mtt", dataset="cifar10", ipc=10, fidelity="reference")
    saved = load_protocol(tmp_path / "mtt.yaml", dataset="cifar10", ipc=10)
    assert saved.content_hash() == shipped.content_hash() and saved.fidelity == "reference"
    assert saved.sources == shipped.sources and saved.reference_source == shipped.reference_source
    assert [d.key for d in saved.deviations] == [d.key for d in shipped.deviations]
    assert "dist" in {d.key for d in saved.deviations}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"protocol": {"model": "ConvNet-3", "version": "d"}},
            "protocol.version belongs at the top of the file",
        ),
        (
            {"protocol": {"model": "ConvNet-3", "sources": {"model": "x"}}},
            "protocol.sources belongs at the top",
        ),
        ({"sources": {"model": [None]}}, "sources: model must be a sentence"),
        ({"reasons": {"epochs": 3}}, "reasons: epochs must be a sentence"),
        ({"datasets": [[0]]}, "datasets must be a list of dataset names"),
    ],
)
def test_metadata_of_the_wrong_kind_or_place_is_refused(tmp_path, changes, message):
    doc = {"name": "mine", "protocol": {"model": "ConvNet-3"}} | changes
    with pytest.raises(ConfigError, match=message):
        load_protocol(write_yaml(tmp_path / "p.yaml", doc))
