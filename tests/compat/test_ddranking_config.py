"""DD-Ranking v0.2.0 configuration files translated to protocols, field by field, and every refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ddrank.compat import Config, TranslatedConfig, translate_ddranking_config
from ddrank.errors import ConfigError
from ddrank.protocols import load_protocol
from ddrank.protocols.protocol import ScheduleSpec

DSA_PARAMS = """
aug_params:
  flip: 0.5
  rotate: 15.0
  saturation: 2.0
  brightness: 1.0
  contrast: 0.5
  scale: 1.2
  crop: 0.125
  cutout: 0.5
"""

# configs/Demo_LRS_Hard_Label.yaml, with the DM method's CIFAR-10 IPC 10 batch size.
LRS_HARD_DM = (
    """
# real data
dataset: CIFAR10
real_data_path: ./dataset/
custom_val_trans: null

# synthetic data
ipc: 10
im_size: [32, 32]

# agent model
model_name: ConvNet-3
use_torchvision: false

# data augmentation
data_aug_func: "dsa"
"""
    + DSA_PARAMS
    + """
use_zca: false
custom_train_trans: null

# training specifics
optimizer: sgd
lr_scheduler: step
step_size: 500
weight_decay: 0.0005
momentum: 0.9
num_eval: 5
num_epochs: 1000
syn_batch_size: 256
real_batch_size: 256
default_lr: 0.01
num_workers: 4
device: cuda
dist: true
eval_full_data: false
random_data_path: ./results/my_method_random_data.pt
random_data_format: tensor

# save path
save_path: ./results/my_method_hard_label_scores.csv
"""
)

# DATM on CIFAR-10 IPC 10 in the v0.2.0 soft-label layout (learned labels, mode S, SCE at T = 1).
LRS_SOFT_DATM = (
    """
dataset: CIFAR10
real_data_path: ./dataset/
ipc: 10
im_size: [32, 32]
model_name: ConvNet-3
stu_use_torchvision: false
tea_use_torchvision: false
teacher_dir: ./teacher_models
teacher_model_names: [ConvNet-3]
data_aug_func: dsa
"""
    + DSA_PARAMS
    + """
use_zca: true
use_aug_for_hard: true
custom_train_trans: null
custom_val_trans: null
soft_label_mode: S
soft_label_criterion: sce
loss_fn_kwargs:
  temperature: 1.0
  scale_loss: false
optimizer: sgd
lr_scheduler: step
step_size: 500
weight_decay: 0.0005
momentum: 0.9
num_eval: 5
num_epochs: 1000
num_workers: 4
device: cuda
dist: false
eval_full_data: false
syn_batch_size: 256
real_batch_size: 256
save_path: ./results/cifar10/ipc10/datm.csv
"""
)

# RDED on CIFAR-10 IPC 10 (mode M, KL at T = 20, CutMix), training acc(real, hard) itself.
LRS_SOFT_RDED = """
dataset: CIFAR10
real_data_path: ./dataset/
ipc: 10
im_size: [32, 32]
model_name: ConvNet-3-BN
stu_use_torchvision: false
tea_use_torchvision: false
teacher_dir: ./teacher_models
teacher_model_names: [ConvNet-3-BN]
data_aug_func: cutmix
aug_params:
  beta: 1.0
use_zca: false
custom_train_trans: null
custom_val_trans:
  - name: Resize
    args: {size: 32, antialias: true}
  - name: CenterCrop
    args: {size: 32}
  - name: ToTensor
  - name: Normalize
    args: {mean: [0.4914, 0.4822, 0.4465], std: [0.2023, 0.1994, 0.2010]}
soft_label_mode: M
soft_label_criterion: kl
loss_fn_kwargs:
  temperature: 20.0
  scale_loss: false
optimizer: adamw
lr_scheduler: cosine
weight_decay: 0.01
num_eval: 5
num_epochs: 300
num_workers: 4
device: cuda
eval_full_data: true
syn_batch_size: 100
real_batch_size: 256
save_path: ./results/cifar10/ipc10/rded.csv
"""

# configs/Demo_LRS_Soft_Label.yaml: SRe2L-style ImageNet-1K IPC 10 with a torchvision ResNet-18.
LRS_SOFT_SRE2L_IMAGENET = """
dataset: ImageNet1K
real_data_path: ./dataset/ImageNet1K/
ipc: 10
im_size: [224, 224]
model_name: ResNet-18-BN
stu_use_torchvision: true
tea_use_torchvision: true
teacher_dir: ./teacher_models
teacher_model_names: [ResNet-18-BN]
data_aug_func: cutmix
aug_params:
    beta: 1.0
use_zca: false
custom_train_trans:
  - name: RandomResizedCrop
    args:
      size: 224
      scale: [0.08, 1.0]
  - name: RandomHorizontalFlip
    args:
      p: 0.5
  - name: ToTensor
  - name: Normalize
    args:
      mean: [0.485, 0.456, 0.406]
      std: [0.229, 0.224, 0.225]
custom_val_trans:
  - name: Resize
    args:
      size: 256
  - name: CenterCrop
    args:
      size: 224
  - name: ToTensor
use_aug_for_hard: false
soft_label_mode: M
soft_label_criterion: kl
loss_fn_kwargs:
    temperature: 1.0
    scale_loss: false
optimizer: adamw
lr_scheduler: cosine
weight_decay: 0.01
momentum: 0.9
num_eval: 5
num_epochs: 300
num_workers: 4
device: cuda
dist: true
eval_full_data: false
syn_batch_size: 1024
real_batch_size: 1024
random_data_path: ./random_data/my_method/ImageNet1K/IPC10/
random_data_format: image
save_path: ./my_method_soft_label_scores.csv
"""

# configs/Demo_ARS.yaml.
ARS_SOFT = """
dataset: ImageNet1K
real_data_path: ./dataset/ImageNet1K/
ipc: 10
im_size: [224, 224]
model_name: ResNet-18-BN
stu_use_torchvision: true
tea_use_torchvision: true
teacher_dir: ./teacher_models
teacher_model_names: [ResNet-18-BN]
data_aug_func: cutmix
aug_params:
    beta: 1.0
use_zca: false
custom_train_trans:
  - name: RandomResizedCrop
    args:
      size: 224
      scale: [0.08, 1.0]
  - name: RandomHorizontalFlip
    args:
      p: 0.5
  - name: ToTensor
  - name: Normalize
    args:
      mean: [0.485, 0.456, 0.406]
      std: [0.229, 0.224, 0.225]
custom_val_trans: null
label_type: soft
soft_label_mode: M
soft_label_criterion: kl
loss_fn_kwargs:
    temperature: 1.0
    scale_loss: false
optimizer: adamw
lr_scheduler: cosine
weight_decay: 0.01
momentum: 0.9
num_eval: 5
num_epochs: 300
num_workers: 4
device: cuda
dist: true
batch_size: 1024
random_data_path: ./random_data/my_method/ImageNet1K/IPC10/
random_data_format: image
save_path: ./my_method_ars_scores.csv
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def doc(text: str, **changes: Any) -> dict[str, Any]:
    """A configuration as a mapping, with keys changed (None removes a key)."""
    found = yaml.safe_load(text)
    for key, value in changes.items():
        if value is None:
            found.pop(key, None)
        else:
            found[key] = value
    return found


def test_lrs_hard_label_config_is_the_dm_preset(tmp_path):
    result = translate_ddranking_config(write(tmp_path, LRS_HARD_DM, "Demo_LRS_Hard_Label.yaml"))
    assert isinstance(result, TranslatedConfig)
    proto = result.protocol
    assert (result.metric, result.dataset, result.ipc, result.rounds) == ("lrs", "cifar10", 10, 5)
    assert (result.data_root, result.teacher_dir, result.seed, result.weight) == (
        "./dataset/",
        None,
        None,
        0.5,
    )
    assert result.real_acc == "published" and proto.full_data.published_acc == 0.848
    assert proto.name == "ddranking-Demo_LRS_Hard_Label"
    assert (proto.dataset, proto.ipc, proto.model) == ("cifar10", 10, "ConvNet-3")
    assert (proto.labels.mode, proto.labels.loss, proto.labels.teachers) == ("hard", "ce", ())
    assert proto.augment.dsa == "color_crop_cutout_flip_scale_rotate" and proto.augment.dsa_mode == "S"
    assert not proto.augment.transforms and not proto.augment.mixes
    assert (proto.optimizer.name, proto.optimizer.momentum, proto.optimizer.weight_decay) == (
        "sgd",
        0.9,
        0.0005,
    )
    assert proto.schedule == ScheduleSpec(kind="step", milestones=(0.5,), gamma=0.1)
    assert (proto.epochs, proto.batch_size, proto.lr, proto.use_set_lr) == (1000, 256, None, True)
    assert proto.lr_grid == (0.001, 0.005, 0.01, 0.05, 0.1)
    assert (proto.zca, proto.space, proto.selection) == (False, "normalized", "honest")
    assert proto.content_hash() == load_protocol("dm", dataset="cifar10", ipc=10).content_hash()
    assert result.extras == {
        "custom_val_trans": None,
        "im_size": [32, 32],
        "real_batch_size": 256,
        "default_lr": 0.01,
        "num_workers": 4,
        "device": "cuda",
        "dist": True,
        "random_data_path": "./results/my_method_random_data.pt",
        "random_data_format": "tensor",
        "save_path": "./results/my_method_hard_label_scores.csv",
    }
    assert any("default_lr" in note for note in result.notes)


def test_lrs_soft_label_datm_config_is_the_datm_preset(tmp_path):
    result = translate_ddranking_config(write(tmp_path, LRS_SOFT_DATM))
    proto = result.protocol
    assert (result.metric, result.teacher_dir, result.real_acc) == ("lrs", "./teacher_models", "published")
    labels = proto.labels
    assert (labels.mode, labels.loss, labels.temperature, labels.t2_scale) == ("S", "sce", 1.0, False)
    assert labels.teachers == ("ConvNet-3",)
    assert (proto.zca, proto.space, proto.zca_regularization) == (True, "zca", 0.1)
    assert proto.augment.dsa == "color_crop_cutout_flip_scale_rotate"
    assert (proto.epochs, proto.batch_size) == (1000, 256)
    assert proto.content_hash() == load_protocol("datm", dataset="cifar10", ipc=10).content_hash()
    assert not any("use_aug_for_hard" in note for note in result.notes)


def test_lrs_soft_label_rded_config(tmp_path):
    result = translate_ddranking_config(write(tmp_path, LRS_SOFT_RDED))
    proto = result.protocol
    assert result.real_acc is None  # eval_full_data: true trains acc(real, hard)
    assert proto.model == "ConvNet-3-BN"
    labels = proto.labels
    assert (labels.mode, labels.loss, labels.temperature, labels.t2_scale) == ("M", "kl", 20.0, False)
    assert (labels.teachers, labels.ensemble) == (("ConvNet-3-BN",), "prob")
    assert (proto.augment.cutmix, proto.augment.mixup, proto.augment.dsa) == (1.0, None, None)
    assert (proto.optimizer.name, proto.optimizer.weight_decay) == ("adamw", 0.01)
    assert proto.schedule.kind == "cosine"
    assert (proto.epochs, proto.batch_size, proto.rounds) == (300, 100, 5)
    recipe = proto.full_data
    assert (recipe.optimizer.name, recipe.lr, recipe.epochs, recipe.published_acc) == ("sgd", 0.01, 200, None)
    assert recipe.batch_size == 256  # real_batch_size sets the full-data loader when it is trained
    assert any("half the base lr" in note for note in result.notes)
    assert any("use_aug_for_hard" in note for note in result.notes)
    assert result.extras["custom_val_trans"][0]["name"] == "Resize"


def test_lrs_soft_label_sre2l_imagenet_config(tmp_path):
    result = translate_ddranking_config(write(tmp_path, LRS_SOFT_SRE2L_IMAGENET))
    proto = result.protocol
    assert (result.dataset, result.real_acc) == ("imagenet1k", "published")
    assert proto.full_data.published_acc == 0.6976 and proto.full_data.epochs == 90
    assert proto.model == "torchvision:resnet18" and proto.labels.teachers == ("torchvision:resnet18",)
    assert (proto.labels.mode, proto.labels.loss, proto.labels.temperature) == ("M", "kl", 1.0)
    assert proto.augment.transforms == (
        {"name": "random_resized_crop", "scale": [0.08, 1.0]},
        {"name": "flip", "p": 0.5},
    )
    assert proto.augment.cutmix == 1.0 and proto.batch_size == 1024
    assert any("image-folder" in note for note in result.notes)


def test_ars_config(tmp_path):
    result = translate_ddranking_config(write(tmp_path, ARS_SOFT, "Demo_ARS.yaml"))
    proto = result.protocol
    assert (result.metric, result.real_acc, result.weight) == ("ars", None, 0.5)
    assert (proto.labels.mode, proto.labels.loss, proto.labels.teachers) == (
        "M",
        "kl",
        ("torchvision:resnet18",),
    )
    assert (proto.batch_size, proto.epochs, proto.rounds) == (1024, 300, 5)
    assert proto.augment.enabled and not proto.augment.none().enabled
    assert [step["name"] for step in proto.augment.transforms] == ["random_resized_crop", "flip"]
    assert any("momentum 0.9 is unused by adamw" in note for note in result.notes)
    weighted = translate_ddranking_config(doc(ARS_SOFT, ars_lambda=0.3, seed=7))
    assert (weighted.weight, weighted.seed) == (0.3, 7)


def test_hard_label_ars_config_and_metric_override():
    hard = doc(LRS_HARD_DM, label_type="hard", batch_size=128, syn_batch_size=None)
    result = translate_ddranking_config(hard)
    assert result.metric == "ars" and result.protocol.labels.mode == "hard"
    assert result.protocol.batch_size == 128 and result.real_acc is None
    assert "eval_full_data" in result.extras
    assert translate_ddranking_config(doc(LRS_HARD_DM), metric="ARS").metric == "ars"


def test_general_evaluator_soft_config_uses_the_student_as_teacher():
    general = doc(
        LRS_HARD_DM,
        use_soft_label=True,
        soft_label_mode="M",
        soft_label_criterion="kl",
        temperature=4.0,
        data_aug_func="mixup",
        aug_params={"lambda": 0.8},
    )
    result = translate_ddranking_config(general)
    assert result.metric == "acc" and result.real_acc is None
    labels = result.protocol.labels
    assert (labels.mode, labels.temperature, labels.teachers) == ("M", 4.0, ("ConvNet-3",))
    assert result.protocol.augment.mixup == 0.8


def test_mse_gt_soft_label_config():
    edc = doc(
        LRS_SOFT_RDED,
        model_name="ResNet-18-BN",
        stu_use_torchvision=True,
        tea_use_torchvision=True,
        teacher_model_names=[
            "ResNet-18-BN",
            "AlexNet",
            "mobilenet_v2",
            "shufflenet_v2_x0_5",
            "efficientnet_b0",
        ],
        soft_label_criterion="mse_gt",
        loss_fn_kwargs={"mse_weight": 1.0, "ce_weight": 0.025},
    )
    labels = translate_ddranking_config(edc).protocol.labels
    assert (labels.loss, labels.mse_weight, labels.ce_weight, labels.ensemble) == (
        "mse_gt",
        1.0,
        0.025,
        "logit",
    )
    assert labels.teachers == load_protocol("edc", dataset="imagenet1k").labels.teachers


def test_schedules_and_transforms():
    stepped = translate_ddranking_config(doc(LRS_HARD_DM, num_epochs=90, step_size=30)).protocol
    factors = [stepped.schedule.factor(epoch, 90) for epoch in (29, 30, 59, 60)]
    assert factors == pytest.approx([1.0, 0.1, 0.1, 0.01])
    assert translate_ddranking_config(doc(LRS_HARD_DM, step_size=1000)).protocol.schedule.kind == "constant"
    unstepped = translate_ddranking_config(doc(LRS_HARD_DM, step_size=None))
    assert unstepped.protocol.schedule.milestones == (0.5,)
    assert translate_ddranking_config(
        doc(LRS_SOFT_RDED, lr_scheduler="cosineannealing")
    ).protocol.schedule.kind == ("cosine")
    crop = [{"name": "RandomCrop", "args": {"size": 32, "padding": 4}}, {"name": "RandomHorizontalFlip"}]
    cropped = translate_ddranking_config(doc(LRS_SOFT_RDED, custom_train_trans=crop)).protocol.augment
    assert (cropped.dsa, cropped.dsa_mode, cropped.transforms) == ("crop", "M", ({"name": "flip"},))
    plain = translate_ddranking_config(doc(LRS_HARD_DM, data_aug_func="None", aug_params=None)).protocol
    assert not plain.augment.enabled
    adam = translate_ddranking_config(doc(LRS_SOFT_RDED, optimizer="adam", momentum=[0.8, 0.99])).protocol
    assert (adam.optimizer.name, adam.optimizer.betas) == ("adam", (0.8, 0.99))
    reference = translate_ddranking_config(doc(LRS_HARD_DM, selection="reference")).protocol
    assert reference.optimistic and reference.eval_every == 10


def test_config_mirrors_ddranking_config(tmp_path):
    config = Config.from_file(write(tmp_path, LRS_SOFT_DATM))
    assert config["dataset"] == config.dataset == config.get("dataset") == "CIFAR10"
    assert config.get("missing", 3) == 3 and "soft_label_mode" in config
    assert config.config["ipc"] == 10 and len(config) == len(yaml.safe_load(LRS_SOFT_DATM))
    with pytest.raises(AttributeError, match="no key 'missing'"):
        _ = config.missing
    config.update({"ipc": 50})
    assert translate_ddranking_config(config).ipc == 50
    json_path = tmp_path / "config.json"
    json_path.write_text(json.dumps(dict(config)))
    assert Config.from_file(json_path) == config
    assert repr(Config({"ipc": 1})) == "Config({'ipc': 1})"


@pytest.mark.parametrize(
    ("text", "changes", "key", "fragment"),
    [
        (LRS_HARD_DM, {"soft_label_mod": "M"}, "soft_label_mod", "did you mean 'soft_label_mode'"),
        (LRS_HARD_DM, {"dataset": None}, "dataset", "is required"),
        (LRS_HARD_DM, {"dataset": "CIFAR11"}, "dataset", "did you mean"),
        (LRS_HARD_DM, {"model_name": "ConvNet-3-XX"}, "model_name", "unknown model"),
        (LRS_HARD_DM, {"data_aug_func": "autoaugment"}, "data_aug_func", "use one of dsa, mixup, cutmix"),
        (LRS_HARD_DM, {"num_epochs": 0}, "num_epochs", "integer of at least 1"),
        (LRS_HARD_DM, {"ipc": "ten"}, "ipc", "integer"),
        (LRS_HARD_DM, {"optimizer": "lamb"}, "optimizer", "sgd, adam, adamw"),
        (LRS_HARD_DM, {"weight_decay": -1}, "weight_decay", ">= 0"),
        (LRS_HARD_DM, {"lr_scheduler": "lambda_step"}, "lr_scheduler", "no ddrank schedule"),
        (LRS_HARD_DM, {"lr_scheduler": "cosine"}, "step_size", "step only"),
        (LRS_HARD_DM, {"im_size": [64, 64]}, "im_size", "32x32"),
        (LRS_HARD_DM, {"use_zca": "yes"}, "use_zca", "true or false"),
        (LRS_HARD_DM, {"aug_params": {"beta": 1.0}}, "aug_params", "no DSA parameter 'beta'"),
        (LRS_HARD_DM, {"aug_params": {"rotate": 30.0}}, "aug_params.rotate", "reference strength 15.0"),
        (LRS_HARD_DM, {"data_aug_func": None}, "aug_params", "data_aug_func is none"),
        (LRS_HARD_DM, {"stu_use_torchvision": True}, "stu_use_torchvision", "contradicts use_torchvision"),
        (LRS_HARD_DM, {"soft_label_criterion": "kl"}, "soft_label_criterion", "soft_label_mode is missing"),
        (LRS_HARD_DM, {"lrs_lambda": 2}, "lrs_lambda", "<= 1.0"),
        (
            LRS_SOFT_RDED,
            {"teacher_model_names": None},
            "teacher_model_names",
            "required with soft_label_mode M",
        ),
        (LRS_SOFT_RDED, {"teacher_model_names": "ConvNet-3-BN"}, "teacher_model_names", "list"),
        (LRS_SOFT_RDED, {"soft_label_mode": "X"}, "soft_label_mode", "use one of S, M"),
        (LRS_SOFT_RDED, {"soft_label_criterion": "ce"}, "soft_label_criterion", "kl, sce, mse_gt"),
        (LRS_SOFT_RDED, {"soft_label_criterion": None}, "soft_label_criterion", "is required"),
        (LRS_SOFT_RDED, {"temperature": 4.0}, "temperature", "contradicts loss_fn_kwargs.temperature"),
        (LRS_SOFT_RDED, {"loss_fn_kwargs": {"mse_weight": 1.0}}, "loss_fn_kwargs", "no 'mse_weight'"),
        (LRS_SOFT_RDED, {"loss_fn_kwargs": {"temperature": 0}}, "loss_fn_kwargs.temperature", "> 0"),
        (LRS_SOFT_RDED, {"aug_params": {"beta": 1.0, "cutmix_p": 0.5}}, "aug_params", "two different"),
        (LRS_SOFT_RDED, {"eval_full_data": False}, "eval_full_data", "no published full-data accuracy"),
        (LRS_SOFT_RDED, {"lr_scheduler": "cosine", "step_size": 100}, "step_size", "step only"),
        (
            LRS_SOFT_RDED,
            {"custom_train_trans": [{"name": "ColorJitter"}]},
            "custom_train_trans",
            "not supported",
        ),
        (
            LRS_SOFT_RDED,
            {"custom_train_trans": [{"name": "RandomCrop", "args": {"size": 32, "padding": 2}}]},
            "custom_train_trans",
            "only padding 4",
        ),
        (
            LRS_SOFT_RDED,
            {"custom_train_trans": [{"name": "RandomResizedCrop", "args": {"size": 64}}]},
            "custom_train_trans",
            "crop size 64",
        ),
        (LRS_SOFT_SRE2L_IMAGENET, {"use_zca": True}, "use_zca", "not 'imagenet1k'"),
        (LRS_SOFT_SRE2L_IMAGENET, {"momentum": [0.9]}, "momentum", "pair of betas"),
        (ARS_SOFT, {"label_type": "hard"}, "soft_label_mode", "label_type asks for hard labels"),
        (ARS_SOFT, {"label_type": "both"}, "label_type", "use one of hard, soft"),
        (LRS_SOFT_DATM, {"teacher_model_names": None}, "teacher_model_names", "label the random baseline"),
        (LRS_SOFT_DATM, {"selection": "best"}, "selection", "honest, reference"),
    ],
)
def test_invalid_or_contradictory_keys_are_refused_by_name(text, changes, key, fragment):
    with pytest.raises(ConfigError) as caught:
        translate_ddranking_config(doc(text, **changes))
    message = str(caught.value)
    assert f": {key}: " in message or f"unknown key '{key}'" in message, message
    assert fragment in message, message


def test_file_and_argument_problems(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        translate_ddranking_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="unsupported format"):
        translate_ddranking_config(write(tmp_path, LRS_HARD_DM, "config.txt"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        translate_ddranking_config(write(tmp_path, "- dataset: CIFAR10\n"))
    with pytest.raises(ConfigError, match="cannot be parsed"):
        translate_ddranking_config(write(tmp_path, "dataset: [CIFAR10\n"))
    with pytest.raises(ConfigError, match="metric must be one of lrs, ars, acc"):
        translate_ddranking_config(doc(LRS_HARD_DM), metric="ior")
