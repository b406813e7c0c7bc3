"""Every shipped preset resolves, uses valid names, hashes well and encodes the published settings."""

from __future__ import annotations

from collections import defaultdict

import pytest

from ddrank.augment import DSA, transforms_from_spec
from ddrank.labels import LOSSES
from ddrank.models import canonical_model_name
from ddrank.protocols import Protocol, load_protocol, preset, preset_names
from ddrank.protocols.protocol import ScheduleSpec

SHIPPED = ("d4m", "datm", "dc", "digits", "digits-kd", "dm", "dsa", "edc", "gvbsm", "mtt", "rded", "sre2l")
IPCS = (1, 10, 50)
CASES = [(name, dataset) for name in preset_names() for dataset in preset(name)["datasets"]]
SOFT = ("datm", "sre2l", "rded", "d4m", "edc", "gvbsm", "digits-kd")
EDC_TEACHERS_SMALL = (
    "torchvision:resnet18",
    "AlexNet",
    "torchvision:mobilenet_v2",
    "torchvision:shufflenet_v2_x0_5",
    "torchvision:efficientnet_b0",
)
# SPEC section 7: the only published full-data accuracies, keyed by (dataset, model).
PUBLISHED = {
    ("cifar10", "ConvNet-3"): 0.848,
    ("cifar100", "ConvNet-3"): 0.562,
    ("tinyimagenet", "ConvNet-4"): 0.376,
    ("imagenet1k", "torchvision:resnet18"): 0.6976,
}


def resolved(name: str, dataset: str, ipc: int | None = 10) -> Protocol:
    return load_protocol(name, dataset=dataset, ipc=ipc)


def test_every_method_of_the_spec_ships_a_preset():
    assert set(SHIPPED) <= set(preset_names())
    assert preset_names() == sorted(preset_names())


@pytest.mark.parametrize(("name", "dataset"), CASES)
def test_preset_resolves_with_valid_names_for_each_ipc(name, dataset):
    for ipc in IPCS:
        proto = resolved(name, dataset, ipc)
        assert (proto.name, proto.dataset, proto.ipc) == (name, dataset, ipc)
        assert proto.selection == "honest" and proto.rounds == 5
        models = [
            proto.model,
            *proto.labels.teachers,
            *([proto.full_data.model] if proto.full_data.model else []),
        ]
        assert all(canonical_model_name(model) == model for model in models), models
        assert proto.labels.loss in LOSSES
        for augment in (proto.augment, proto.full_data.augment):
            transforms_from_spec(list(augment.transforms))
            if augment.dsa is not None:
                assert isinstance(DSA(augment.dsa, augment.dsa_mode), DSA)
        assert proto.lr is not None or proto.lr_grid
        assert (proto.labels.mode == "hard") == (name not in SOFT)


@pytest.mark.parametrize(("name", "dataset"), CASES)
def test_hashes_are_stable_and_distinct_per_ipc(name, dataset):
    hashes = [resolved(name, dataset, ipc).content_hash() for ipc in (None, *IPCS)]
    assert hashes == [resolved(name, dataset, ipc).content_hash() for ipc in (None, *IPCS)]
    assert len(set(hashes)) == len(hashes)


def test_equal_hashes_only_for_equal_content():
    by_hash: dict[str, list[Protocol]] = defaultdict(list)
    for name, dataset in CASES:
        by_hash[resolved(name, dataset).content_hash()].append(resolved(name, dataset))
    for protocols in by_hash.values():
        contents = {p.model_dump_json(exclude={"name", "description"}) for p in protocols}
        assert len(contents) == 1
    assert resolved("dsa", "cifar10").content_hash() != resolved("dc", "cifar10").content_hash()
    assert resolved("sre2l", "cifar10").content_hash() != resolved("sre2l", "cifar100").content_hash()


def test_presets_agree_on_the_full_data_recipe_of_a_model():
    recipes = defaultdict(set)
    for name, dataset in CASES:
        proto = resolved(name, dataset)
        recipes[(dataset, proto.full_data.model or proto.model)].add(proto.full_data.model_dump_json())
    assert all(len(found) == 1 for found in recipes.values()), recipes


def test_published_full_data_accuracies_are_exactly_those_of_the_spec():
    for name, dataset in CASES:
        proto = resolved(name, dataset)
        published = PUBLISHED.get((dataset, proto.full_data.model or proto.model))
        assert proto.full_data.published_acc == published, (name, dataset)
        assert (proto.full_data.published_source is None) == (published is None)


def test_full_data_recipes_follow_the_spec():
    cifar = resolved("rded", "cifar10").full_data  # ConvNet-3-BN
    assert (cifar.optimizer.name, cifar.lr, cifar.optimizer.momentum, cifar.optimizer.weight_decay) == (
        "sgd",
        0.01,
        0.9,
        0.0005,
    )
    assert (cifar.epochs, cifar.batch_size, cifar.schedule) == (200, 512, ScheduleSpec(milestones=(0.5,)))
    tiny_conv = resolved("rded", "tinyimagenet").full_data
    assert (tiny_conv.optimizer.name, tiny_conv.lr, tiny_conv.epochs) == ("sgd", 0.01, 100)
    assert [tiny_conv.schedule.factor(e, 100) for e in (49, 50)] == [1.0, 0.1]
    tiny_resnet = resolved("sre2l", "tinyimagenet").full_data
    assert (tiny_resnet.optimizer.name, tiny_resnet.optimizer.weight_decay, tiny_resnet.lr) == (
        "adamw",
        0.01,
        0.01,
    )
    assert (tiny_resnet.schedule.kind, tiny_resnet.epochs) == ("cosine", 100)
    imagenet = resolved("edc", "imagenet1k").full_data
    assert (imagenet.optimizer.name, imagenet.lr, imagenet.optimizer.weight_decay, imagenet.epochs) == (
        "sgd",
        0.1,
        0.0001,
        90,
    )
    factors = [imagenet.schedule.factor(e, 90) for e in (29, 30, 59, 60)]
    assert factors == pytest.approx([1.0, 0.1, 0.1, 0.01])


def test_dc_family():
    for name in ("dc", "dsa", "dm", "mtt"):
        cifar, tiny = resolved(name, "cifar10"), resolved(name, "tinyimagenet")
        assert (cifar.model, tiny.model) == ("ConvNet-3", "ConvNet-4")
        assert cifar.augment.enabled == (name != "dc")
        assert cifar.labels.mode == "hard" and not cifar.zca


def test_datm_uses_stored_soft_labels_with_zca():
    for dataset, model in (
        ("cifar10", "ConvNet-3"),
        ("cifar100", "ConvNet-3"),
        ("tinyimagenet", "ConvNet-4"),
    ):
        proto = resolved("datm", dataset)
        assert proto.model == model and proto.labels.teachers == (model,)
        assert (proto.labels.mode, proto.labels.loss, proto.labels.temperature) == ("S", "sce", 1.0)
        assert proto.zca and proto.space == "zca" and proto.zca_regularization == 0.1
        assert proto.augment.dsa == "color_crop_cutout_flip_scale_rotate"
        assert (proto.optimizer.name, proto.schedule.kind, proto.epochs, proto.batch_size) == (
            "sgd",
            "step",
            1000,
            256,
        )
        assert proto.use_set_lr and proto.lr is None


def test_sre2l_settings():
    cifar = resolved("sre2l", "cifar10")
    assert cifar.model == "torchvision:resnet18" and cifar.labels.teachers == ("torchvision:resnet18",)
    assert (cifar.labels.mode, cifar.labels.loss, cifar.labels.temperature, cifar.labels.t2_scale) == (
        "M",
        "kl",
        30.0,
        False,
    )
    assert (cifar.augment.mixup, cifar.augment.cutmix) == (0.8, None)
    assert [step["name"] for step in cifar.augment.transforms] == ["random_resized_crop", "flip"]
    assert cifar.augment.transforms[0]["scale"] == [0.08, 1.0]
    assert (cifar.optimizer.name, cifar.optimizer.weight_decay, cifar.schedule.kind) == (
        "adamw",
        0.01,
        "cosine",
    )
    assert (cifar.epochs, cifar.batch_size, cifar.lr) == (400, 256, 0.001)
    assert resolved("sre2l", "cifar100").labels.temperature == 30.0
    tiny = resolved("sre2l", "tinyimagenet")
    assert (tiny.labels.temperature, tiny.augment.mixup, tiny.augment.cutmix) == (20.0, None, 1.0)
    assert (tiny.epochs, tiny.batch_size) == (400, 256)
    imagenet = resolved("sre2l", "imagenet1k")
    assert (imagenet.labels.temperature, imagenet.augment.cutmix, imagenet.epochs, imagenet.batch_size) == (
        20.0,
        1.0,
        300,
        1024,
    )


def test_rded_settings_and_batch_size_by_ipc():
    models = {"cifar10": "ConvNet-3-BN", "tinyimagenet": "ConvNet-4-BN", "imagenet1k": "torchvision:resnet18"}
    for dataset, model in models.items():
        proto = resolved("rded", dataset)
        assert proto.model == model and proto.labels.teachers == (model,)
        assert (proto.labels.loss, proto.labels.temperature, proto.augment.cutmix) == ("kl", 20.0, 1.0)
        assert [s["name"] for s in proto.augment.transforms] == ["patch_shuffle", "random_resized_crop"]
        assert proto.augment.transforms[1]["scale"] == [0.5, 1.0]
        assert (proto.optimizer.name, proto.schedule.kind, proto.lr, proto.epochs) == (
            "adamw",
            "cosine",
            0.001,
            300,
        )
    batches = {ipc: resolved("rded", "cifar10", ipc).batch_size for ipc in IPCS}
    assert batches == {1: 10, 10: 100, 50: 200}
    assert {resolved("rded", "tinyimagenet", ipc).batch_size for ipc in IPCS} == {10, 50, 100}
    every = [resolved("rded", dataset, ipc).batch_size for dataset in models for ipc in IPCS]
    assert min(every) == 10 and max(every) == 200


def test_d4m_settings():
    cifar = resolved("d4m", "cifar100")
    assert (cifar.model, cifar.labels.teachers, cifar.epochs, cifar.batch_size) == (
        "ConvNet-3",
        ("ConvNet-3",),
        500,
        100,
    )
    for dataset in ("tinyimagenet", "imagenet1k"):
        proto = resolved("d4m", dataset)
        assert (proto.model, proto.epochs, proto.batch_size) == ("torchvision:resnet18", 300, 1024)
    assert (cifar.labels.loss, cifar.labels.temperature, cifar.augment.cutmix) == ("kl", 20.0, 1.0)
    assert (cifar.optimizer.name, cifar.schedule.kind) == ("adamw", "cosine")


def test_edc_settings():
    proto = resolved("edc", "cifar10")
    assert proto.model == "torchvision:resnet18"
    assert (proto.labels.mode, proto.labels.loss, proto.labels.mse_weight, proto.labels.ce_weight) == (
        "M",
        "mse_gt",
        1.0,
        0.025,
    )
    assert proto.labels.teachers == EDC_TEACHERS_SMALL and proto.labels.ensemble == "logit"
    assert resolved("edc", "imagenet1k").labels.teachers[1] == "torchvision:alexnet"
    assert [s["name"] for s in proto.augment.transforms] == ["patch_shuffle", "random_resized_crop"]
    assert proto.augment.cutmix == 1.0
    assert (proto.optimizer.name, proto.schedule.kind, proto.lr, proto.epochs, proto.batch_size) == (
        "adamw",
        "cosine",
        0.001,
        300,
        100,
    )


def test_gvbsm_uses_edc_teachers_less_alexnet():
    for dataset in preset("gvbsm")["datasets"]:
        gvbsm, edc = resolved("gvbsm", dataset), resolved("edc", dataset)
        assert gvbsm.labels.teachers == tuple(t for t in edc.labels.teachers if "alexnet" not in t.lower())
        assert len(gvbsm.labels.teachers) == 4
        assert (gvbsm.labels.loss, gvbsm.labels.temperature, gvbsm.augment.cutmix) == ("kl", 20.0, 1.0)
        assert (gvbsm.optimizer.name, gvbsm.schedule.kind, gvbsm.epochs, gvbsm.batch_size) == (
            "adamw",
            "cosine",
            300,
            1024,
        )


def test_digits_kd_is_digits_with_a_teacher():
    digits, kd = resolved("digits", "digits"), resolved("digits-kd", "digits")
    assert kd.model == digits.model
    assert (kd.labels.mode, kd.labels.loss, kd.labels.temperature, kd.labels.t2_scale) == (
        "M",
        "kl",
        4.0,
        False,
    )
    assert kd.labels.teachers == (kd.model,)  # a teacher of the student's architecture, as SRe2L/RDED use
    assert kd.augment == digits.augment and kd.augment.enabled and not kd.augment.none().enabled
    assert (kd.optimizer, kd.schedule, kd.epochs) == (digits.optimizer, digits.schedule, digits.epochs)
    assert kd.full_data == digits.full_data
