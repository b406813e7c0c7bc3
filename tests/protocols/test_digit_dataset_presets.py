"""The DC, DSA and DM presets on MNIST, Fashion-MNIST and SVHN resolve to their papers' code settings."""

import pytest
import torch

from ddrank.augment import transforms_from_spec
from ddrank.data.real import dataset_info
from ddrank.errors import ConfigError
from ddrank.models import create_model
from ddrank.protocols import load_protocol, preset

DIGIT_DATASETS = ("mnist", "fashion-mnist", "svhn")


def test_dc_on_mnist_uses_its_own_augmentation_and_1000_epochs():
    protocol = load_protocol("dc", dataset="mnist", ipc=10)
    assert protocol.model == "ConvNet-3" and protocol.epochs == 1000 and protocol.batch_size == 256
    assert protocol.augment.dsa is None
    (step,) = protocol.augment.transforms
    assert step == {
        "name": "dc_augment",
        "strategy": "crop_scale_rotate",
        "crop": 4,
        "scale": 0.2,
        "rotate": 45,
    }
    (aug,) = transforms_from_spec([dict(step)]).transforms
    assert aug.ops == ("crop", "scale", "rotate")
    assert not protocol.augment.none().enabled  # ARS's "without augmentation" drops it


@pytest.mark.parametrize("dataset", ["fashion-mnist", "svhn"])
def test_dc_elsewhere_trains_300_epochs_without_augmentation(dataset):
    protocol = load_protocol("dc", dataset=dataset, ipc=1)
    assert protocol.model == "ConvNet-3" and protocol.epochs == 300 and not protocol.augment.enabled


def test_dsa_drops_flips_for_digits_only():
    for dataset, strategy in (
        ("mnist", "color_crop_cutout_scale_rotate"),
        ("svhn", "color_crop_cutout_scale_rotate"),
        ("fashion-mnist", "color_crop_cutout_flip_scale_rotate"),
    ):
        protocol = load_protocol("dsa", dataset=dataset, ipc=10)
        assert (protocol.augment.dsa, protocol.augment.dsa_mode, protocol.epochs) == (strategy, "S", 1000)
        assert protocol.model == "ConvNet-3" and not protocol.augment.transforms


@pytest.mark.parametrize("dataset", DIGIT_DATASETS)
def test_dm_uses_its_code_defaults(dataset):
    protocol = load_protocol("dm", dataset=dataset, ipc=50)
    assert (protocol.augment.dsa, protocol.epochs, protocol.model) == (
        "color_crop_cutout_flip_scale_rotate", 1000, "ConvNet-3"
    )  # fmt: skip


def test_cifar_settings_are_unchanged_by_the_new_datasets():
    for name in ("dc", "dsa", "dm"):
        cifar = load_protocol(name, dataset="cifar10", ipc=10)
        assert cifar.model == "ConvNet-3" and cifar.epochs == 1000 and not cifar.augment.transforms
        assert load_protocol(name, dataset="tinyimagenet", ipc=1).model == "ConvNet-4"


@pytest.mark.parametrize("name", ["mtt"])
@pytest.mark.parametrize("dataset", [*DIGIT_DATASETS, "kmnist"])
def test_unpublished_datasets_are_refused(name, dataset):
    with pytest.raises(ConfigError, match=f"protocol '{name}' is defined for .*not '{dataset}'"):
        load_protocol(name, dataset=dataset)


@pytest.mark.parametrize("name", ["dc", "dsa", "dm"])
def test_kmnist_is_in_no_preset(name):
    assert "kmnist" not in preset(name)["datasets"]
    with pytest.raises(ConfigError, match="not 'kmnist'"):
        load_protocol(name, dataset="kmnist")


def test_every_new_override_names_its_source():
    from importlib import resources

    for name in ("dc", "dsa", "dm"):
        text = (resources.files("ddrank.protocols") / "presets" / f"{name}.yaml").read_text()
        tail = text[text.index("# MNIST, Fashion-MNIST, SVHN") :]
        settings = [
            line
            for line in tail.splitlines()
            if line.startswith("      ") and not line.strip().startswith("#")
        ]
        sources = [line for line in tail.splitlines() if line.strip().startswith("# source:")]
        assert settings and len(sources) == len(settings)


@pytest.mark.parametrize("dataset", DIGIT_DATASETS)
def test_convnet3_builds_for_the_datasets_shape(dataset):
    info = dataset_info(dataset)
    model = create_model("ConvNet-3", info.channels, info.num_classes, info.size)
    out = model(torch.zeros(2, info.channels, info.size, info.size))
    assert out.shape == (2, 10)
    assert model.classifier.in_features == 128 * (info.size // 8) ** 2
