"""RunSettings: every setting is validated once, with a message naming it; DD-Ranking configurations,
student matrices and copies go through the same checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import ddrank.settings as settings_module
from ddrank.compat.ddranking_config import translate_ddranking_config
from ddrank.engine.options import EngineOptions
from ddrank.errors import ConfigError, InputError, UnknownNameError
from ddrank.evaluation.evaluator import Evaluator
from ddrank.protocols import default_protocol, load_protocol
from ddrank.protocols.protocol import precision_deviation
from ddrank.settings import RunSettings, SettingError

CONFIGS = Path(__file__).parent / "fixtures" / "ddranking-configs"


def test_defaults_and_canonical_names():
    settings = RunSettings(dataset="CIFAR-10", real_acc="0.9", teachers="teacher.pt")
    assert (settings.dataset, settings.metric, settings.seed, settings.weight) == ("cifar10", "lrs", 0, 0.5)
    assert settings.real_acc == 0.9 and settings.teachers == ("teacher.pt",)
    assert settings.protocol_source == "dsa" and settings.fidelity is None
    assert settings.torch_device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    default = RunSettings(device="cpu")
    assert default.precision_for(load_protocol("dsa", dataset="cifar10", ipc=10)) == "fp32"
    assert default.options == EngineOptions()


def test_auto_precision_keeps_reference_protocols_in_fp32_and_an_explicit_bf16_is_a_deviation(monkeypatch):
    monkeypatch.setattr(settings_module, "default_precision", lambda device: "bf16")  # a bf16-capable GPU
    honest = load_protocol("dsa", dataset="cifar10", ipc=10)
    reference = load_protocol("dsa", dataset="cifar10", ipc=10, fidelity="reference")
    auto = RunSettings(dataset="cifar10", device="cpu")
    assert (auto.precision_for(honest), auto.precision_for(reference)) == ("bf16", "fp32")
    assert precision_deviation(reference, "fp32") is None and precision_deviation(honest, "bf16") is None
    said = precision_deviation(reference, "bf16")
    assert said is not None and said.moves_score and said.kind == "changed"
    assert said.line().startswith("precision: source fp32 (no autocast) → ddrank bf16 autocast [moves")
    monkeypatch.setattr(RunSettings, "precision_for", lambda self, protocol: "bf16")  # --precision bf16
    evaluator = Evaluator(RunSettings(dataset="cifar10", device="cpu", fidelity="reference"))
    assert said in evaluator.deviations(evaluator.protocol_for(10))
    assert not any(d.key == "precision" for d in Evaluator(auto).deviations(honest))


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"weight": 1.5}, SettingError, "weight must lie in [0, 1], got 1.5"),
        ({"rounds": 0}, SettingError, "rounds must be at least 1, got 0"),
        ({"ipc": 0}, SettingError, "ipc must be a positive integer; got 0"),
        ({"seed": -1}, SettingError, "seed must be a non-negative integer, got -1"),
        ({"real_acc": 90}, SettingError, "not percentages: 90% is 0.9"),
        ({"real_acc": "high"}, SettingError, "real_acc must be a fraction in [0, 1] or 'published'"),
        ({"metric": "lrz"}, UnknownNameError, "unknown metric 'lrz'; did you mean 'lrs'"),
        ({"dataset": "cifar1"}, UnknownNameError, "unknown dataset 'cifar1'; did you mean 'cifar10'"),
        ({"backend": "ensembel"}, UnknownNameError, "unknown backend 'ensembel'; did you mean 'ensemble'"),
        ({"precision": "fp16"}, SettingError, "precision must be one of auto, fp32, bf16, got 'fp16'"),
        ({"precision": "bf16", "device": "cpu"}, SettingError, "bf16 is for CUDA devices; use fp32"),
        ({"device": "gpu0"}, SettingError, "device must name a torch device"),
        ({"fidelity": "exact"}, SettingError, "fidelity input should be 'reference' or 'honest'"),
        ({"teachers": 3}, SettingError, "teachers must be checkpoint paths, got 3"),
        ({"rouds": 3}, UnknownNameError, "unknown setting 'rouds'; did you mean 'rounds'"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(fields, error, message):
    with pytest.raises(error) as caught:
        RunSettings(**fields)
    assert message in str(caught.value)
    assert isinstance(caught.value, InputError | UnknownNameError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_refused():
    with pytest.raises(SettingError, match="'cuda' was asked for but CUDA is not available"):
        RunSettings(device="cuda")


def test_settings_are_frozen_and_copies_are_validated():
    settings = RunSettings(rounds=2)
    with pytest.raises(Exception, match="frozen"):
        settings.rounds = 3  # type: ignore[misc]
    assert settings.replace(rounds=3).rounds == 3 and settings.rounds == 2
    with pytest.raises(SettingError, match="rounds must be at least 1"):
        settings.replace(rounds=0)
    assert SettingError("real_acc", "is wrong").renamed("--real-acc").args[0] == "--real-acc is wrong"


def test_fidelity_is_carried_without_changing_the_protocol():
    honest, reference = RunSettings(fidelity="honest"), RunSettings(fidelity="reference")
    assert (honest.fidelity, reference.fidelity) == ("honest", "reference")
    assert honest.replace(fidelity=None) == RunSettings()


def test_a_translated_ddranking_config_fills_what_is_not_given():
    config = translate_ddranking_config(CONFIGS / "eval/DATM/CIFAR10/IPC10.yaml", metric="lrs")
    settings = RunSettings.from_translated(config)
    assert (settings.dataset, settings.ipc, settings.rounds, settings.metric) == ("cifar10", 10, 5, "lrs")
    assert settings.protocol == config.protocol and settings.seed == 0
    overridden = RunSettings.from_translated(config, rounds=1, weight=0.3, seed=None)
    assert (overridden.rounds, overridden.weight, overridden.seed) == (1, 0.3, 0)


def test_a_student_matrix_replaces_only_the_model():
    matrix = RunSettings(ipc=10, rounds=2).for_students(["ConvNet-2-W16", "MLP"])
    preset = load_protocol("digits", dataset="digits", ipc=10)
    assert [s.protocol.model for s in matrix] == ["ConvNet-2-W16", "MLP"]
    assert matrix[1].protocol == preset.with_overrides(model="MLP") and matrix[1].rounds == 2
    with pytest.raises(UnknownNameError, match="unknown protocol 'dsaa'"):
        RunSettings(protocol="dsaa").for_students(["MLP"])
    with pytest.raises(ConfigError, match="defined for cifar10"):
        RunSettings(protocol="dsa").for_students(["MLP"])


def test_a_student_matrix_refuses_an_empty_list_an_empty_name_and_a_student_named_twice():
    settings = RunSettings(ipc=10)
    with pytest.raises(SettingError, match="students must name at least one model"):
        settings.for_students([])
    with pytest.raises(SettingError, match="students has an empty model name"):
        settings.for_students(["MLP", " "])
    with pytest.raises(SettingError, match=r"students names MLP twice \('MLP' and 'mlp'\)"):
        settings.for_students(["MLP", "ConvNet-2-W16", "mlp"])


def test_a_dataset_without_a_protocol_gets_its_default_or_an_error_naming_the_choices():
    assert RunSettings(dataset="cifar10").protocol_source == "dsa"
    assert RunSettings(dataset="svhn").protocol_source == "dsa"
    assert RunSettings(dataset="digits").protocol_source == "digits"
    with pytest.raises(ConfigError, match="pass --protocol, one of d4m, edc, gvbsm, rded, sre2l"):
        default_protocol("imagenet1k")
    with pytest.raises(ConfigError, match="no preset covers dataset 'imagenette'"):
        default_protocol("imagenette")


def test_model_names_typed_in_any_case_resolve_to_one_protocol(tmp_path):
    """Model names match case-insensitively; the registered spelling is what is hashed, grouped and
    keyed, whether the name comes from --students or from a protocol file."""
    (typed,) = RunSettings(ipc=10).for_students(["convnet-2-w16"])
    (registered,) = RunSettings(ipc=10).for_students(["ConvNet-2-W16"])
    assert typed.protocol.model == "ConvNet-2-W16"
    assert typed.protocol.content_hash() == registered.protocol.content_hash()
    preset = load_protocol("digits", dataset="digits", ipc=10)
    hashes = []
    for model, full_model in [("convnet-2-w16", "CONVNET-2-W16"), ("ConvNet-2-W16", "ConvNet-2-W16")]:
        doc = preset.model_dump(mode="json", exclude={"deviations"})
        doc["model"], doc["full_data"]["model"] = model, full_model
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
        resolved = Evaluator(RunSettings(protocol=str(tmp_path / "p.yaml"), device="cpu")).protocol_for(10)
        assert (resolved.model, resolved.full_data.model) == ("ConvNet-2-W16", "ConvNet-2-W16")
        hashes.append(resolved.content_hash())
    assert hashes[0] == hashes[1]
