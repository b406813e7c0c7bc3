"""Every shipped preset resolves in both fidelities, uses valid names, hashes well, names the source
of every setting, and its reference form is the protocol DD-Ranking runs for the method."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from ddrank.augment import DSA, transforms_from_spec
from ddrank.compat import translate_ddranking_config
from ddrank.errors import ConfigError
from ddrank.labels import LOSSES
from ddrank.models import canonical_model_name
from ddrank.protocols import Protocol, load_protocol, preset, preset_names
from ddrank.protocols.protocol import ScheduleSpec, canonical_dump, leaves

SHIPPED = ("d4m", "datm", "dc", "digits", "digits-kd", "dm", "dsa", "edc", "gvbsm", "mtt", "rded", "sre2l")
IPCS = (1, 10, 50)
CASES = [(name, dataset) for name in preset_names() for dataset in preset(name)["datasets"]]
SOFT = ("datm", "sre2l", "rded", "d4m", "edc", "gvbsm", "digits-kd")
FIXED_LR = ("d4m", "sre2l", "rded", "edc", "gvbsm")
GRID = (0.001, 0.005, 0.01, 0.05, 0.1)
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
DDRANKING_CONFIGS = Path(__file__).parents[1] / "fixtures" / "ddranking-configs"


def resolved(name: str, dataset: str, ipc: int | None = 10, fidelity: str | None = None) -> Protocol:
    return load_protocol(name, dataset=dataset, ipc=ipc, fidelity=fidelity)


def test_every_method_of_the_spec_ships_a_preset():
    assert set(SHIPPED) <= set(preset_names())
    assert preset_names() == sorted(preset_names())


@pytest.mark.parametrize(("name", "dataset"), CASES)
def test_preset_resolves_with_valid_names_in_both_fidelities(name, dataset):
    for ipc in IPCS:
        for fidelity in ("honest", "reference"):
            proto = resolved(name, dataset, ipc, fidelity)
            assert (proto.name, proto.dataset, proto.ipc, proto.fidelity) == (name, dataset, ipc, fidelity)
            assert proto.selection == fidelity and proto.optimistic == (fidelity == "reference")
            models = [proto.model, *proto.labels.teachers, *filter(None, [proto.full_data.model])]
            assert all(canonical_model_name(model) == model for model in models), models
            assert proto.labels.loss in LOSSES
            for augment in (proto.augment, proto.full_data.augment):
                transforms_from_spec(list(augment.transforms))
                if augment.dsa is not None:
                    assert isinstance(DSA(augment.dsa, augment.dsa_mode), DSA)
            assert (proto.labels.mode == "hard") == (name not in SOFT)
            keys = {d.key for d in proto.deviations}
            assert {"scores", "seed", "std"} <= keys  # fractions, seeds, ddof: said in every form
        assert resolved(name, dataset, ipc).rounds == 5


@pytest.mark.parametrize(("name", "dataset"), CASES)
def test_hashes_are_stable_and_distinct_per_ipc_and_fidelity(name, dataset):
    for fidelity in ("honest", "reference"):
        hashes = [resolved(name, dataset, ipc, fidelity).content_hash() for ipc in (None, *IPCS)]
        assert hashes == [resolved(name, dataset, ipc, fidelity).content_hash() for ipc in (None, *IPCS)]
        assert len(set(hashes)) == len(hashes)
    assert (
        resolved(name, dataset).content_hash() != resolved(name, dataset, fidelity="reference").content_hash()
    )


def test_equal_hashes_only_for_equal_content():
    by_hash: dict[str, list[Protocol]] = defaultdict(list)
    for name, dataset in CASES:
        for fidelity in ("honest", "reference"):
            proto = resolved(name, dataset, fidelity=fidelity)
            by_hash[proto.content_hash()].append(proto)
    for protocols in by_hash.values():
        assert len({str(canonical_dump(p)) for p in protocols}) == 1
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
        assert proto.full_data.source == "trained"
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


# --- every setting names its source ------------------------------------------------------------


@pytest.mark.parametrize("name", preset_names())
def test_every_setting_of_a_preset_names_its_source(name):
    doc = preset(name)
    for dataset in doc["datasets"]:
        for ipc in IPCS:
            sources = resolved(name, dataset, ipc).sources
            keys = set(doc["protocol"]) | {
                key for rule in doc.get("overrides", []) for key in (rule.get("set") or {})
            }
            missing = [key for key in keys if not any(s == key or s.startswith(f"{key}.") for s in sources)]
            assert not missing, f"{name} {dataset}: settings without a source: {missing}"


def test_presets_without_a_published_reference_say_so():
    for name in ("edc", "gvbsm"):
        for dataset in ("cifar10", "cifar100", "tinyimagenet"):
            assert resolved(name, dataset, fidelity="reference").reference_source is None
        assert "ImageNet1K" in resolved(name, "imagenet1k", fidelity="reference").reference_source
    for name in ("dc", "dsa", "dm", "mtt", "datm", "d4m", "sre2l", "rded"):
        for dataset in ("cifar10", "cifar100", "tinyimagenet"):
            assert "DD-Ranking" in resolved(name, dataset).reference_source, (name, dataset)
    assert resolved("digits", "digits").reference_source is None


# --- the methods' published evaluation (issue section 3) ----------------------------------------


def test_dc_family():
    for name in ("dc", "dsa", "dm", "mtt"):
        cifar, tiny = resolved(name, "cifar10"), resolved(name, "tinyimagenet")
        assert (cifar.model, tiny.model) == ("ConvNet-3", "ConvNet-4")
        assert cifar.augment.enabled == (name != "dc")
        assert cifar.labels.mode == "hard" and not cifar.zca
        assert (cifar.epochs, cifar.batch_size, cifar.lr_grid) == (1000, 256, GRID)
        assert cifar.schedule == ScheduleSpec(kind="step", milestones=(0.5,), gamma=0.1)


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
        assert proto.augment.dsa == "color_crop_cutout_flip_scale_rotate" and proto.hard_augment == "all"
        assert proto.use_set_lr and proto.lr is None
        reference = resolved("datm", dataset, fidelity="reference")
        # use_aug_for_hard: true also trains the full-data baseline with DSA
        assert reference.full_data.augment.dsa == proto.augment.dsa and reference.hard_augment == "all"


def test_sre2l_settings():
    cifar = resolved("sre2l", "cifar10")
    assert cifar.model == "torchvision:resnet18" and cifar.labels.teachers == ("torchvision:resnet18",)
    assert (cifar.labels.mode, cifar.labels.loss, cifar.labels.temperature, cifar.labels.t2_scale) == (
        "M",
        "kl",
        30.0,
        False,
    )
    crop, flip = cifar.augment.transforms
    assert (crop["name"], crop["padding"], flip["name"]) == ("random_crop", 4, "flip")
    # the padding is black: -mean/std of the normalisation each form uses
    assert crop["fill"] == pytest.approx([-0.4914 / 0.2023, -0.4822 / 0.1994, -0.4465 / 0.2010], abs=1e-5)
    honest100, reference100 = (
        resolved("sre2l", "cifar100"),
        resolved("sre2l", "cifar100", fidelity="reference"),
    )
    assert honest100.augment.transforms[0]["fill"] == pytest.approx(
        [-0.5071 / 0.2673, -0.4866 / 0.2564, -0.4409 / 0.2762], abs=1e-5
    )
    assert reference100.stats == "cifar10" and reference100.augment.transforms[0]["fill"] == crop["fill"]
    assert (cifar.augment.mixup, cifar.augment.cutmix, cifar.epochs, cifar.batch_size, cifar.lr) == (
        0.8,
        None,
        400,
        256,
        0.001,
    )
    tiny = resolved("sre2l", "tinyimagenet")
    assert (tiny.labels.temperature, tiny.augment.mixup, tiny.augment.cutmix) == (20.0, None, 1.0)
    assert [s["name"] for s in tiny.augment.transforms] == ["random_resized_crop", "flip"]
    assert (tiny.epochs, tiny.batch_size) == (400, 1024)
    imagenet = resolved("sre2l", "imagenet1k")
    assert (imagenet.epochs, imagenet.batch_size) == (300, 1024)
    assert imagenet.test_transforms == ({"name": "resize", "size": 256}, {"name": "center_crop", "size": 224})
    noisy = resolved("sre2l", "tinyimagenet", 50, "reference").augment.transforms
    assert noisy[-1] == {"name": "gaussian_noise", "mean": 0.0, "sigma": 0.1, "clip": False}
    assert "gaussian_noise" not in str(resolved("sre2l", "tinyimagenet", 50).augment.transforms)


def test_rded_settings_and_batch_size_by_ipc():
    models = {"cifar10": "ConvNet-3-BN", "tinyimagenet": "ConvNet-4-BN", "imagenet1k": "ResNet-18-BN"}
    for dataset, model in models.items():
        proto = resolved("rded", dataset)
        assert proto.model == model and proto.labels.teachers == (model,)
        assert (proto.labels.loss, proto.labels.temperature, proto.augment.cutmix) == ("kl", 20.0, 1.0)
        # ShufflePatches(1) is the identity; RandomResizedCrop at scale (1, 1); flip
        assert proto.augment.transforms == (
            {"name": "random_resized_crop", "scale": [1.0, 1.0]},
            {"name": "flip", "p": 0.5},
        )
        assert (proto.optimizer.name, proto.schedule.kind, proto.lr, proto.epochs) == (
            "adamw",
            "cosine",
            0.001,
            300,
        )
    batches = {
        dataset: [resolved("rded", dataset, ipc).batch_size for ipc in IPCS]
        for dataset in ("cifar10", "cifar100", "tinyimagenet", "imagenet1k")
    }
    assert batches == {
        "cifar10": [10, 50, 100],
        "cifar100": [20, 50, 200],
        "tinyimagenet": [100, 100, 200],
        "imagenet1k": [20, 100, 200],
    }
    assert [resolved("rded", "cifar100", ipc).model for ipc in IPCS] == ["ConvNet-3-BN"] * 2 + [
        "ConvNet-4-BN"
    ]
    assert resolved("rded", "tinyimagenet").test_transforms == (
        {"name": "resize", "size": 72},
        {"name": "center_crop", "size": 64},
    )


def test_d4m_and_gvbsm_crop_and_flip():
    for name in ("d4m", "gvbsm"):
        for dataset in preset(name)["datasets"]:
            proto = resolved(name, dataset)
            assert proto.augment.transforms == (
                {"name": "random_resized_crop", "scale": [0.08, 1.0]},
                {"name": "flip", "p": 0.5},
            )
            assert proto.augment.cutmix == 1.0
    assert {resolved("gvbsm", d).batch_size for d in preset("gvbsm")["datasets"]} == {512}
    assert [resolved("d4m", "cifar100", ipc).labels.temperature for ipc in IPCS] == [30.0, 20.0, 20.0]
    assert resolved("d4m", "cifar10", 1).labels.temperature == 20.0
    cifar = resolved("d4m", "cifar10")
    assert (cifar.model, cifar.epochs, cifar.batch_size, cifar.lr) == ("ConvNet-3", 500, 100, 0.01)
    for dataset in ("tinyimagenet", "imagenet1k"):
        proto = resolved("d4m", dataset)
        assert (proto.model, proto.epochs, proto.batch_size, proto.lr) == (
            "torchvision:resnet18",
            300,
            1024,
            0.001,
        )


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
    assert [s["name"] for s in proto.augment.transforms] == ["patch_shuffle", "random_resized_crop", "flip"]
    assert (proto.optimizer.name, proto.schedule.kind, proto.lr, proto.epochs, proto.batch_size) == (
        "adamw",
        "cosine",
        0.001,
        300,
        100,
    )
    assert [resolved("edc", "imagenet1k", ipc, "reference").rounds for ipc in IPCS] == [1, 5, 1]


def test_gvbsm_uses_edc_teachers_less_alexnet():
    for dataset in preset("gvbsm")["datasets"]:
        gvbsm, edc = resolved("gvbsm", dataset), resolved("edc", dataset)
        assert gvbsm.labels.teachers == tuple(t for t in edc.labels.teachers if "alexnet" not in t.lower())
        assert (gvbsm.labels.loss, gvbsm.labels.temperature, gvbsm.optimizer.name, gvbsm.epochs) == (
            "kl",
            20.0,
            "adamw",
            300,
        )


@pytest.mark.parametrize("name", FIXED_LR)
def test_fixed_lr_presets_search_the_grid_for_random_and_hard_runs(name):
    for dataset in preset(name)["datasets"]:
        for fidelity in ("honest", "reference"):
            proto = resolved(name, dataset, fidelity=fidelity)
            assert proto.lr is not None
            assert proto.learning_rates("syn") == (proto.lr,)  # the method's lr for the soft-label run
            assert proto.learning_rates("random") == GRID == proto.learning_rates("hard")


def test_digits_kd_is_digits_with_a_teacher():
    digits, kd = resolved("digits", "digits"), resolved("digits-kd", "digits")
    assert kd.model == digits.model
    assert (kd.labels.mode, kd.labels.loss, kd.labels.temperature, kd.labels.t2_scale) == (
        "M",
        "kl",
        4.0,
        False,
    )
    assert kd.labels.teachers == (kd.model,)
    assert kd.augment == digits.augment and kd.augment.enabled and not kd.augment.none().enabled
    assert (kd.optimizer, kd.schedule, kd.epochs) == (digits.optimizer, digits.schedule, digits.epochs)
    assert kd.full_data == digits.full_data


# --- reference and honest forms ---------------------------------------------------------------


def test_reference_form_carries_ddrankings_conventions():
    reference = resolved("d4m", "cifar100", 50, "reference")
    assert (reference.eval_every, reference.schedule.period, reference.random_data) == (20, 2.0, "image")
    assert (reference.hard_augment, reference.stats, reference.jpeg_quality) == ("transforms", "cifar10", 75)
    recipe = reference.full_data  # CIFAR100-ConvNet-3 run for the config's 500 epochs at real_batch_size 256
    assert (recipe.epochs, recipe.batch_size, recipe.schedule.milestones) == (500, 256, (0.2, 0.4, 0.6, 0.8))
    imagenet = resolved("sre2l", "imagenet1k", 10, "reference").full_data
    assert (imagenet.source, imagenet.published_acc) == ("published", 0.565)
    assert "REAL_DATA_ACC_CACHE['ImageNet1K-ResNet-18-BN'] = 56.5" in imagenet.published_source
    tiny = resolved("d4m", "tinyimagenet", 10, "reference").full_data
    assert (tiny.source, tiny.published_acc) == ("published", 0.464)
    assert resolved("dm", "cifar10", 10, "reference").eval_every == 10


def test_honest_form_lists_each_difference_from_the_reference():
    honest = resolved("d4m", "cifar100", 50)
    changed = {d.key: d for d in honest.deviations if d.kind == "changed"}
    assert {"selection", "schedule", "random_data", "hard_augment", "full_data", "stats"} <= set(changed)
    assert (
        changed["schedule"].source_value == "period=2.0" and changed["schedule"].ddrank_value == "period=1.0"
    )
    assert "500 epochs, batch 256" in changed["full_data"].source_value
    assert "200 epochs, batch 512" in changed["full_data"].ddrank_value
    assert all(d.reason for d in honest.deviations)
    assert "rounds" in {d.key for d in resolved("edc", "imagenet1k", 1).deviations}


def _ddranking_cases() -> list[tuple[Path, str, str, int]]:
    methods = {
        "DC": "dc",
        "DSA": "dsa",
        "DM": "dm",
        "MTT": "mtt",
        "DATM": "datm",
        "D4M": "d4m",
        "SRe2L": "sre2l",
    }
    methods["G-VBSM"] = "gvbsm"
    datasets = {
        "CIFAR10": "cifar10",
        "CIFAR100": "cifar100",
        "TinyImageNet": "tinyimagenet",
        "ImageNet1K": "imagenet1k",
    }
    cases = []
    for path in sorted((DDRANKING_CONFIGS / "eval").glob("*/*/IPC*.yaml")):
        method, dataset = path.parts[-3], path.parts[-2]
        if method in methods:
            cases.append((path, methods[method], datasets[dataset], int(path.stem.split("_")[0][3:])))
    return cases


@pytest.mark.parametrize(
    ("path", "name", "dataset", "ipc"),
    _ddranking_cases(),
    ids=lambda v: "/".join(v.parts[-3:]) if isinstance(v, Path) else None,
)
def test_reference_preset_is_the_protocol_ddranking_runs(path, name, dataset, ipc):
    """The reference form of a preset equals the translation of DD-Ranking's own configuration, except
    the method's lr (passed to compute_metrics, not in the file) and, for ARS, fields ARS never reads."""
    preset_reference = resolved(name, dataset, ipc, "reference")
    try:
        translated = translate_ddranking_config(path)
    except ConfigError as exc:
        # DD-Ranking cannot run it; the preset's reference form says how it resolves the crash.
        crashed = {"eval_full_data", "step_size", "teacher_model_names", "weight_decay"}
        message = str(exc)
        key = next(k for k in crashed if f": {k}: " in message)
        assert key in {d.key for d in preset_reference.deviations}, message
        return
    mine = translated.protocol.model_copy(
        update={"lr": preset_reference.lr, "ipc": ipc, "version": preset_reference.version}
    )
    ours, theirs = leaves(canonical_dump(mine)), leaves(canonical_dump(preset_reference))
    ignore = ("full_data.published",) + (("full_data", "hard_augment") if translated.metric == "ars" else ())
    differ = {k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k) and not k.startswith(ignore)}
    assert not differ, {k: (ours.get(k), theirs.get(k)) for k in differ}
    said = {d.key for d in preset_reference.deviations_for(translated.metric)}
    unsaid = {d.key for d in translated.deviations if d.kind != "ignored"} - said
    assert unsaid <= ({"ipc"} if (name, dataset, ipc) == ("dc", "cifar100", 1) else set()), unsaid


def test_dc_cifar100_ipc1_configuration_is_mislabelled():
    translated = translate_ddranking_config(DDRANKING_CONFIGS / "eval" / "DC" / "CIFAR100" / "IPC1.yaml")
    note = next(d for d in translated.deviations if d.key == "ipc")
    assert translated.ipc == 10 and note.kind == "note" and "IPC1.yaml" in note.source_value
