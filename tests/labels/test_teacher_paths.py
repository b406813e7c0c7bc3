"""Where teacher checkpoints are found: explicit paths, ddrank's teacher-directory layout and
DD-Ranking's (``teacher_dir/<DD-Ranking dataset>/<model_name>/ckpt_best.pt``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ddrank.errors import CheckpointError
from ddrank.labels.teachers import CHECKPOINT_NAME, resolve_teachers, teacher_path


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"checkpoint")
    return path


@pytest.mark.parametrize(
    ("dataset", "model", "folders"),
    [
        ("imagenet1k", "torchvision:resnet18", ("ImageNet1K", "ResNet-18-BN")),
        ("imagenet1k", "torchvision:resnet18", ("ImageNet1K", "ResNet-18")),
        ("tinyimagenet", "torchvision:vgg11_bn", ("TinyImageNet", "VGG-11-BN")),
        ("imagenet1k", "torchvision:mobilenet_v2", ("ImageNet1K", "mobilenet_v2")),
        ("cifar10", "ConvNet-3", ("CIFAR10", "ConvNet-3")),
        ("cifar100", "torchvision:alexnet", ("CIFAR100", "AlexNet")),
    ],
)
def test_a_teacher_directory_in_ddrankings_layout_is_found(tmp_path, dataset, model, folders):
    expected = _touch(tmp_path.joinpath(*folders, CHECKPOINT_NAME))
    assert teacher_path(tmp_path, dataset, model) == expected
    assert resolve_teachers([model], dataset=dataset, teacher_dir=tmp_path) == [expected]


def test_ddranks_own_layout_comes_first_and_is_named_when_nothing_exists(tmp_path):
    ours = tmp_path / "imagenet1k" / "torchvision:resnet18" / CHECKPOINT_NAME
    assert teacher_path(tmp_path, "imagenet1k", "torchvision:resnet18") == ours  # nothing there yet
    with pytest.raises(CheckpointError, match=r"missing teacher checkpoint for torchvision:resnet18: .*"):
        resolve_teachers(["torchvision:resnet18"], dataset="imagenet1k", teacher_dir=tmp_path)
    _touch(tmp_path / "ImageNet1K" / "ResNet-18-BN" / CHECKPOINT_NAME)
    _touch(ours)
    assert teacher_path(tmp_path, "imagenet1k", "torchvision:resnet18") == ours
