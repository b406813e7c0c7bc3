"""The resolved protocol drives the run: per-cell learning rates and augmentation, reference checkpoints,
cached full-data accuracies, test views, the JPEG round trip of random subsets, refusals before training,
deviations said and stored, and ``evaluate --dry-run`` over every vendored DD-Ranking configuration."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torchvision import transforms

from ddrank.cli import main
from ddrank.data.real import dataset_info
from ddrank.evaluation.space import jpeg_round_trip, round_trips, view_images
from ddrank.planning import dry_run
from ddrank.settings import RunSettings

CONFIGS = Path(__file__).parent / "fixtures" / "ddranking-configs"
GRID = [0.001, 0.005, 0.01, 0.05, 0.1]


def _report(config: str, **fields) -> dict:
    from ddrank.compat.ddranking_config import translate_ddranking_config

    translated = translate_ddranking_config(CONFIGS / config, fidelity=fields.pop("fidelity", None))
    return dry_run(RunSettings.from_translated(translated, device="cpu", **fields))


def _cells(report: dict) -> dict[str, dict]:
    return {c["cell"]: c for c in report["plan"]["cells"]}


def test_soft_label_reference_plan_follows_ddranking():
    """D4M CIFAR-10 IPC 10 (LabelRobustScoreSoft): the hard run searches the grid without augmentation,
    checkpoints every 20 epochs, a half-period cosine, best test selection."""
    report = _report("eval/D4M/CIFAR10/IPC10.yaml")
    cells = _cells(report)
    assert report["fidelity"] == "reference" and report["protocol"]["fidelity"] == "reference"
    assert cells["random"]["learning_rates"] == GRID == cells["syn_hard"]["learning_rates"]
    assert cells["syn_hard"]["labels"] == "hard" and "cutmix" not in cells["syn_hard"]["augment"]
    assert "cutmix" in cells["syn"]["augment"]  # use_aug_for_hard: false spares only the hard run
    epochs = cells["syn"]["epochs"]
    assert cells["syn"]["checkpoints"] == list(range(20, epochs, 20))
    assert cells["syn"]["schedule"]["kind"] == "cosine" and cells["syn"]["schedule"]["period"] == 2
    assert cells["syn"]["selection"] == "best test accuracy over lrs and checkpoints"
    honest = _cells(_report("eval/D4M/CIFAR10/IPC10.yaml", fidelity="honest"))
    assert honest["syn"]["selection"] == "validation split, final epoch" and not honest["syn"]["checkpoints"]
    assert honest["syn"]["schedule"].get("period", 1) == 1


def test_the_set_lr_trains_only_the_synthetic_soft_label_run():
    from ddrank.data.synthetic import SyntheticSet
    from ddrank.planning import dry_run as plan

    settings = RunSettings(protocol="d4m", dataset="cifar10", ipc=1, device="cpu", real_acc=0.9)
    syn = SyntheticSet(torch.zeros(10, 3, 32, 32), None, 0.02, "normalized", "<stand-in>", "tensor")
    cells = _cells(plan(settings, syn))
    assert cells["syn"]["learning_rates"] == [0.02]
    assert cells["syn_hard"]["learning_rates"] == cells["random"]["learning_rates"] == GRID


def test_hard_label_reference_checkpoints_every_10_epochs_also_for_full_data():
    cells = _cells(_report("eval/DC/CIFAR10/IPC10.yaml"))
    assert cells["syn"]["checkpoints"][:2] == [10, 20]
    assert cells["real"]["checkpoints"][:2] == [10, 20]  # DD-Ranking keeps the best full-data checkpoint
    assert "syn_hard" not in cells


def test_datm_trains_the_full_data_baseline_with_dsa_in_reference_only():
    reference = _cells(_report("eval/DATM/CIFAR10/IPC10.yaml"))
    assert reference["real"]["augment"].get("dsa") and reference["syn_hard"]["augment"].get("dsa")
    honest = _cells(_report("eval/DATM/CIFAR10/IPC10.yaml", fidelity="honest"))
    assert honest["syn_hard"]["augment"].get("dsa")


def test_cifar100_uses_cifar10_statistics_in_reference():
    report = _report("eval/DATM/CIFAR100/IPC10.yaml")
    assert report["protocol"]["stats"] == "cifar10"
    assert dataset_info("cifar100", stats="cifar10").mean == dataset_info("cifar10").mean


@pytest.mark.parametrize(
    ("config", "accuracy"),
    [("eval/D4M/TinyImageNet/IPC10.yaml", 0.464), ("eval/SRe2L/ImageNet1K/IPC10.yaml", 0.565)],
)
def test_cached_full_data_accuracies_are_used_and_labelled(config, accuracy):
    report = _report(config)
    assert report["full_data"]["accuracy"] == accuracy
    assert "REAL_DATA_ACC_CACHE" in report["full_data"]["source"]
    assert "real" not in _cells(report)  # nothing trains on the full data


def test_imagenet_test_transforms_apply_to_the_protocol_cells_only():
    cells = _cells(_report("eval/D4M/ImageNet1K/IPC10.yaml"))
    steps = [{"name": "resize", "size": 256}, {"name": "center_crop", "size": 224}]
    assert cells["syn"]["test_transforms"] == steps == cells["random"]["test_transforms"]
    assert cells["syn_hard"]["test_transforms"] == []


def test_test_view_is_resize_then_center_crop():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 40, 30), dtype=torch.uint8, generator=gen)
    steps = [{"name": "resize", "size": 36}, {"name": "center_crop", "size": 32}]
    expected = transforms.Compose([transforms.Resize(36), transforms.CenterCrop(32)])(images)
    # uint8 resampling paths of torchvision round differently by at most one level
    assert (view_images(images, steps, 32).int() - expected.int()).abs().max() <= 1
    assert view_images(images, steps, 32).shape[-2:] == (32, 32)


def test_jpeg_round_trip_matches_ddranking_storage():
    info = dataset_info("cifar10")
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=gen)
    mean, std = torch.tensor(info.mean).view(3, 1, 1), torch.tensor(info.std).view(3, 1, 1)
    expected = []
    for image in images:  # DD-Ranking: ToTensor, Normalize, denormalise, clamp, ToPILImage, save .jpg, reload
        normalised = transforms.Normalize(info.mean, info.std)(image.float() / 255)
        pil = transforms.ToPILImage()(torch.clamp(normalised * std + mean, 0, 1))
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG")
        expected.append(torch.from_numpy(np.array(Image.open(buffer))).permute(2, 0, 1))
    trip = jpeg_round_trip(images, info, 75)
    assert torch.equal(trip, torch.stack(expected))
    assert not torch.equal(trip, images)  # lossy
    assert round_trips(info, "image") and not round_trips(info, "tensor")
    assert not round_trips(dataset_info("tinyimagenet"), "image")  # image folders: copies of the files


def _dry(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["evaluate", "--dry-run", "--no-progress", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_vendored_configuration_dry_runs_or_is_refused_in_one_line(capsys):
    files = sorted(CONFIGS.rglob("*.y*ml"))
    assert len(files) == 84
    outcomes = {}
    for path in files:
        code, out, err = _dry(capsys, "--config", path)
        notes = ("ddrank: deviation: ", "ddrank: deviations from the source")
        errors = [line for line in err.splitlines() if not line.startswith(notes)]
        if code == 0:
            assert out.startswith("protocol ") and "fidelity" not in errors and not errors, (path, err)
            assert "(reference, hash " in out, path
        else:
            assert code == 2 and len(errors) == 1 and errors[0].startswith("ddrank: error: "), (path, err)
        outcomes[path.relative_to(CONFIGS).as_posix()] = code
    assert outcomes["eval/D4M/TinyImageNet/IPC10.yaml"] == 0  # a cached full-data accuracy
    assert outcomes["eval/DC/TinyImageNet/IPC1.yaml"] == 2  # REAL_DATA_TRAINING_CONFIG lacks it
    assert sum(code == 0 for code in outcomes.values()) >= 50


def test_refusals_name_the_honest_alternative_and_honest_runs(capsys):
    config = CONFIGS / "eval/DC/TinyImageNet/IPC1.yaml"
    code, _, err = _dry(capsys, "--config", config)
    assert code == 2 and err.count("\n") == 1 and "fidelity honest" in err
    code, out, _ = _dry(capsys, "--config", config, "--fidelity", "honest")
    assert code == 0 and "(honest, hash " in out
    code, _, err = _dry(
        capsys, "--protocol", "digits", "--fidelity", "reference", "--metric", "ars", "--ipc", "1"
    )
    assert code == 2 and err.count("\n") == 1 and "fidelity honest" in err


def test_dry_run_json_holds_protocol_full_data_deviations_and_plan(capsys, tmp_path):
    out = tmp_path / "plan.json"
    code, text, err = _dry(capsys, "--config", CONFIGS / "eval/D4M/ImageNet1K/IPC10.yaml", "--json", out)
    assert code == 0
    report = json.loads(out.read_text())
    assert report["protocol"]["fidelity"] == "reference" and report["protocol"]["content_hash"]
    assert report["full_data"] == {
        "accuracy": 0.565,
        "source": report["full_data"]["source"],
    } and report["full_data"]["source"].startswith("published")
    keys = {d["key"] for d in report["deviations"]}
    assert {"scores", "dataset"} <= keys  # and the ImageNet decoding difference
    assert err.count("ddrank: deviation: ") == len(report["deviations"])
    assert (
        report["plan"]["jobs"] == sum(c["jobs_per_round"] for c in report["plan"]["cells"]) * report["rounds"]
    )


TINY = {
    "name": "tiny",
    "model": "ConvNet-2-W16",
    "augment": {"dsa": "color_crop_cutout_scale_rotate"},
    "epochs": 4,
    "eval_every": 2,
    "lr_grid": [0.1],
    "rounds": 1,
    "random_data": "image",
    "test_transforms": [{"name": "resize", "size": 10}, {"name": "center_crop", "size": 8}],
    "full_data": {"lr": 0.1, "epochs": 1, "batch_size": 512},
}


def test_a_reference_run_says_and_stores_its_deviations(capsys, tmp_path):
    from ddrank.store import ResultStore

    protocol = tmp_path / "tiny.yaml"
    protocol.write_text(yaml.safe_dump(TINY))
    images = torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.save(images, tmp_path / "set.pt")
    store, out = tmp_path / "r.sqlite", tmp_path / "r.json"
    common = ["--images", tmp_path / "set.pt", "--protocol", protocol, "--store", store, "--no-progress"]
    code = main(["evaluate", *map(str, common), "--fidelity", "reference", "--json", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    said = [line for line in err.splitlines() if line.startswith("ddrank: deviation: ")]
    result = json.loads(out.read_text())["evaluations"][0]
    assert result["fidelity"] == "reference" == result["provenance"]["fidelity"]
    assert len(said) == len(result["deviations"]) > 0
    assert (
        result["per_round"][0]["runs"]["syn"][0]["best_test_acc"]
        >= result["per_round"][0]["runs"]["syn"][0]["test_acc"]
    )
    code = main(["evaluate", *map(str, common), "--fidelity", "honest", "--json", str(out)])
    assert code == 0
    honest = json.loads(out.read_text())["evaluations"][0]
    assert honest["fidelity"] == "honest" and honest["protocol_hash"] != result["protocol_hash"]
    with ResultStore(store) as opened:
        stored = {(e["protocol_hash"], e["fidelity"]) for e in opened.evaluations()}
    assert stored == {(result["protocol_hash"], "reference"), (honest["protocol_hash"], "honest")}


def test_honest_selection_sees_the_validation_split_through_the_test_transforms():
    """The lr is chosen on the view the test set is scored on: the protocol cells' validation split goes
    through the test transforms too, as a set of its own (other cells keep the plain split)."""
    from ddrank import rng
    from ddrank.baselines import generate
    from ddrank.data.sampling import validation_split
    from ddrank.evaluation.evaluator import Evaluator
    from ddrank.protocols import Protocol

    protocol = Protocol.model_validate(TINY | {"selection": "honest"})
    evaluator = Evaluator(RunSettings(dataset="digits", protocol=protocol, device="cpu", rounds=1))
    syn = generate("random", evaluator.real, 1, seed=0)
    jobs, data, _ = evaluator.plan({"x": evaluator.validate(syn, ipc=1)})
    cells = {job.cell: job for job in jobs}
    assert cells["syn"].val_set == cells["random"].val_set != "val:0"
    viewed, plain = data.val_sets[cells["syn"].val_set], data.val_sets["val:0"]
    real = evaluator.real
    val_idx, _ = validation_split(real.train_labels, 10, protocol.val_fraction, rng.derive_seed(0, 0))
    expected = view_images(real.train_images[val_idx], TINY["test_transforms"], 8)
    assert torch.equal(viewed.images, evaluator.space(protocol).real(expected))
    assert torch.equal(viewed.labels, plain.labels) and not torch.equal(viewed.images, plain.images)
    assert viewed.fingerprint != plain.fingerprint  # the jobs' keys name the view they were chosen on
    assert data.test_for(cells["syn"].spec) is not data.test


@pytest.mark.parametrize("selection", ["reference", "honest"])
def test_random_subsets_come_from_the_whole_training_set_only_under_reference_selection(selection):
    """DD-Ranking draws its random subsets from the whole training set and holds nothing out; honest
    selection draws them from the rest of the round's validation split."""
    from ddrank import rng
    from ddrank.baselines import generate
    from ddrank.data.sampling import random_subset, validation_split
    from ddrank.evaluation.evaluator import Evaluator
    from ddrank.protocols import Protocol

    fields = {"selection": selection, "fidelity": selection, "random_data": "tensor"}
    protocol = Protocol.model_validate(TINY | fields)
    evaluator = Evaluator(RunSettings(dataset="digits", protocol=protocol, device="cpu", rounds=1))
    real = evaluator.real
    jobs, data, _ = evaluator.plan({"x": evaluator.validate(generate("random", real, 10, seed=0), ipc=10)})
    (random_set,) = {job.train_set for job in jobs if job.cell == "random"}
    seed = rng.derive_seed(0, 0)
    val_idx, pool = validation_split(real.train_labels, 10, protocol.val_fraction, seed)
    drawn = random_subset(real.train_labels, pool if selection == "honest" else None, 10, 10, seed)
    expected = evaluator.space(protocol).real(real.train_images[drawn])
    assert torch.equal(data.train_sets[random_set].images, expected.to(data.device))
    held_out = torch.isin(drawn, val_idx).any().item()
    assert held_out == (selection == "reference")  # 10 of 179 per class: some fall in the split
    assert bool(data.val_sets) == (selection == "honest")
    assert all(job.val_set is None for job in jobs) == (selection == "reference")


def test_reference_selection_tests_only_at_multiples_of_eval_every():
    """DD-Ranking tests when (epoch + 1) % test_interval == 0: the final epoch counts only when it is a
    multiple; a run shorter than the interval falls back to its final epoch."""
    from ddrank.engine.job import JobResult
    from ddrank.evaluation.evaluator import _run

    uneven = JobResult(0.9, None, ((10, 0.5), (20, 0.6), (25, 0.9)), 1.0, "loop")
    assert _run(0.01, uneven, 10).best_test_acc == 0.6  # epoch 25 is never tested there
    even = JobResult(0.9, None, ((10, 0.5), (20, 0.9)), 1.0, "loop")
    assert _run(0.01, even, 10).best_test_acc == 0.9
    short = JobResult(0.4, None, ((5, 0.4),), 1.0, "loop")
    assert _run(0.01, short, 10).best_test_acc == 0.4


def test_a_diverged_runs_checkpoints_count_as_ddrankings_nan_network_under_reference_selection():
    """DD-Ranking does not stop a non-finite step: from there its weights are NaN and each test image gets
    one class (1/C of a balanced test set). ddrank freezes the student, so under reference selection its
    checkpoints from the divergence on count 1/C; honest selection reads the final epoch as it is."""
    from ddrank.engine.job import JobResult
    from ddrank.evaluation.evaluator import _run

    per_class = (0.5,) * 10
    late = JobResult(
        0.6, 0.6, ((10, 0.5), (20, 0.6), (30, 0.6)), 1.0, "loop", None, per_class, None, True, 15
    )
    assert _run(0.01, late, 10, reference=True).best_test_acc == 0.5  # before its divergence in epoch 15
    assert _run(0.01, late, 10).best_test_acc == 0.6
    early = JobResult(0.3, 0.3, ((10, 0.3), (20, 0.3)), 1.0, "loop", None, per_class, None, True, 10)
    assert _run(0.01, early, 10, reference=True).best_test_acc == 0.1
    healthy = JobResult(0.6, 0.6, ((10, 0.5), (20, 0.6)), 1.0, "loop", None, per_class)
    assert _run(0.01, healthy, 10, reference=True).best_test_acc == 0.6


def test_a_reference_run_shorter_than_its_test_interval_is_a_repaired_deviation():
    from ddrank.protocols import Protocol
    from ddrank.protocols.protocol import derived_deviations

    short = Protocol.model_validate(TINY | {"selection": "reference", "fidelity": "reference", "epochs": 1})
    said = {d.key: d for d in derived_deviations(short)}
    assert said["num_epochs"].kind == "repaired" and "best accuracy 0" in said["num_epochs"].source_value
    assert said["full_data.epochs"].kind == "repaired"  # TINY's full-data run is 1 epoch too
    assert "num_epochs" not in {d.key for d in derived_deviations(short.with_overrides(epochs=4))}


@pytest.mark.parametrize("selection", ["reference", "honest"])
def test_a_dry_run_plans_the_runs_jobs_without_converting_real_images(selection):
    """A dry run keys every job as the run does (test and validation views, JPEG random subsets) while
    its real sets keep their uint8 pixels; a test transform of the wrong size still fails in it."""
    from ddrank.baselines import generate
    from ddrank.errors import ConfigError
    from ddrank.evaluation.evaluator import Evaluator
    from ddrank.protocols import Protocol

    protocol = Protocol.model_validate(TINY | {"selection": selection, "fidelity": selection})
    evaluator = Evaluator(RunSettings(dataset="digits", protocol=protocol, device="cpu", rounds=1))
    sets = {"x": evaluator.validate(generate("random", evaluator.real, 1, seed=0), ipc=1)}
    planned, dry_data, _ = evaluator.plan(sets, dry_run=True)
    jobs, data, _ = evaluator.plan(sets)
    assert [j.key for j in planned] == [j.key for j in jobs]
    assert {n: len(t) for n, t in dry_data.train_sets.items()} == {
        n: len(t) for n, t in data.train_sets.items()
    }
    assert dry_data.test.images.dtype == torch.uint8 and data.test.images.dtype == torch.float32
    assert (
        dry_data.test_views.keys() == data.test_views.keys()
        and dry_data.val_sets.keys() == data.val_sets.keys()
    )
    wrong = Protocol.model_validate(
        TINY
        | {"selection": selection, "fidelity": selection, "test_transforms": [{"name": "resize", "size": 10}]}
    )
    evaluator = Evaluator(RunSettings(dataset="digits", protocol=wrong, device="cpu", rounds=1))
    with pytest.raises(ConfigError, match="end them with center_crop of size 8"):
        evaluator.plan(sets, dry_run=True)
