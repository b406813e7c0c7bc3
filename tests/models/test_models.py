"""The model zoo: names, shapes, checkpoint layout and loading, torchvision adaptation, vmap."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

from ddrank.errors import CheckpointError, InputError, UnknownNameError
from ddrank.models import (
    MODELS,
    canonical_model_name,
    create_model,
    describe_models,
    load_state_dict_checked,
    model_names,
    uses_batchnorm,
)
from ddrank.models.layers import AvgPool2x2

OWN_NAMES = [name for name in model_names() if not name.startswith("torchvision:")]
TORCHVISION_SAMPLE = [
    "torchvision:resnet18",
    "torchvision:mobilenet_v3_small",
    "torchvision:shufflenet_v2_x0_5",
]
# Names that cannot take 8 px images, with the reason their InputError gives.
TOO_SMALL_AT_8PX = {"LeNet": "at least 16 px", "ConvNet-4": "at most 3", "ConvNet-4-BN": "at most 3"}


def convnet3_state(classes: int = 10, channels: int = 3, width: int = 128) -> dict[str, torch.Tensor]:
    """A ConvNet-3 state dict written by hand with the DD-Ranking / MTT key names and shapes."""
    generator = torch.Generator().manual_seed(123)
    state = {}
    in_channels = channels
    for conv in (0, 4, 8):
        scale = (in_channels * 9) ** -0.5
        state[f"features.{conv}.weight"] = scale * torch.randn(width, in_channels, 3, 3, generator=generator)
        state[f"features.{conv}.bias"] = 0.1 * torch.randn(width, generator=generator)
        state[f"features.{conv + 1}.weight"] = 1 + 0.1 * torch.randn(width, generator=generator)
        state[f"features.{conv + 1}.bias"] = 0.1 * torch.randn(width, generator=generator)
        in_channels = width
    state["classifier.weight"] = torch.randn(classes, width * 16, generator=generator) / (width * 16) ** 0.5
    state["classifier.bias"] = 0.1 * torch.randn(classes, generator=generator)
    return state


def convnet3_by_hand(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """ConvNet-3 (instance norm) written out with functional ops."""
    out = x
    for conv in (0, 4, 8):
        out = F.conv2d(out, state[f"features.{conv}.weight"], state[f"features.{conv}.bias"], padding=1)
        weight, bias = state[f"features.{conv + 1}.weight"], state[f"features.{conv + 1}.bias"]
        out = F.group_norm(out, out.shape[1], weight, bias)
        out = F.avg_pool2d(F.relu(out), 2)
    return F.linear(out.flatten(1), state["classifier.weight"], state["classifier.bias"])


def shapes(model: nn.Module) -> dict[str, list[int]]:
    return {key: list(value.shape) for key, value in model.state_dict().items()}


@pytest.mark.parametrize(("channels", "size"), [(1, 8), (3, 32)])
@pytest.mark.parametrize("name", OWN_NAMES + TORCHVISION_SAMPLE)
def test_every_family_builds_and_classifies(name, channels, size):
    if size == 8 and name in TOO_SMALL_AT_8PX:
        with pytest.raises(InputError, match=TOO_SMALL_AT_8PX[name]):
            create_model(name, channels, 7, size)
        return
    model = create_model(name, channels, 7, size)
    with torch.no_grad():
        assert model(torch.randn(2, channels, size, size)).shape == (2, 7)
    assert not any(getattr(module, "inplace", False) for module in model.modules())  # vmap-safe


def test_convnet3_state_dict_matches_dd_ranking_layout():
    expected = {}
    for conv, cin in ((0, 3), (4, 128), (8, 128)):
        expected[f"features.{conv}.weight"] = [128, cin, 3, 3]
        expected[f"features.{conv}.bias"] = [128]
        expected[f"features.{conv + 1}.weight"] = [128]
        expected[f"features.{conv + 1}.bias"] = [128]
    expected["classifier.weight"] = [10, 2048]
    expected["classifier.bias"] = [10]
    assert shapes(create_model("ConvNet-3", 3, 10, 32)) == expected

    with_bn = shapes(create_model("ConvNet-3-BN", 3, 10, 32))
    for norm in (1, 5, 9):
        expected[f"features.{norm}.running_mean"] = [128]
        expected[f"features.{norm}.running_var"] = [128]
        expected[f"features.{norm}.num_batches_tracked"] = []
    assert with_bn == expected


def test_hand_written_dd_ranking_checkpoint_loads_and_computes_the_same():
    state = convnet3_state()
    model = create_model("ConvNet-3", 3, 10, 32)
    load_state_dict_checked(model, state, source="teachers/cifar10/ConvNet-3/ckpt_best.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), convnet3_by_hand(state, x))


def test_checkpoint_wrapped_by_data_parallel_loads():
    state = {f"module.{key}": value for key, value in convnet3_state().items()}
    model = create_model("ConvNet-3", 3, 10, 32)
    load_state_dict_checked(model, state, source="ckpt.pt")
    torch.testing.assert_close(model.classifier.bias, state["module.classifier.bias"])


def test_checkpoint_without_num_batches_tracked_loads():
    source = create_model("ConvNet-3-BN", 3, 10, 32)
    source.features[1].running_mean.fill_(0.5)
    state = {key: value for key, value in source.state_dict().items() if "num_batches_tracked" not in key}
    model = create_model("ConvNet-3-BN", 3, 10, 32)
    load_state_dict_checked(model, state, source="old.pt")
    torch.testing.assert_close(model.features[1].running_mean, torch.full((128,), 0.5))


def test_mismatching_checkpoint_names_keys_shapes_and_source():
    model = create_model("ConvNet-3", 3, 100, 32)
    with pytest.raises(CheckpointError) as caught:
        load_state_dict_checked(model, convnet3_state(classes=10), source="teachers/ckpt_best.pt")
    message = str(caught.value)
    assert "classifier.weight: expected [100, 2048], found [10, 2048]" in message
    assert "teachers/ckpt_best.pt" in message

    state = convnet3_state()
    state["features.12.weight"] = state.pop("features.8.weight")
    with pytest.raises(CheckpointError, match=r"missing features\.8\.weight .*unexpected features\.12\."):
        load_state_dict_checked(create_model("ConvNet-3", 3, 10, 32), state, source="x.pt")

    with pytest.raises(CheckpointError, match="not a state dict"):
        load_state_dict_checked(model, [1, 2], source="x.pt")


def test_convnet_variants():
    assert shapes(create_model("ConvNet-3-W64", 3, 10, 32))["classifier.weight"] == [10, 64 * 16]
    assert create_model("ConvNet-3-W64", 3, 10, 32).features[0].out_channels == 64

    no_norm = create_model("ConvNet-3-NN", 3, 10, 32)
    assert [type(layer) for layer in no_norm.features[:3]] == [nn.Conv2d, nn.ReLU, AvgPool2x2]
    conv_keys = [f"features.{conv}.{kind}" for conv in (0, 3, 6) for kind in ("weight", "bias")]
    assert sorted(no_norm.state_dict()) == sorted([*conv_keys, "classifier.weight", "classifier.bias"])

    layer_norm = create_model("ConvNet-3-LN", 3, 10, 32).features[1]
    assert isinstance(layer_norm, nn.GroupNorm) and layer_norm.num_groups == 1
    instance_norm = create_model("ConvNet-3", 3, 10, 32).features[1]
    assert isinstance(instance_norm, nn.GroupNorm) and instance_norm.num_groups == 128
    assert instance_norm.affine

    gap = create_model("ConvNet-3-GAP", 3, 10, 64)
    assert shapes(gap)["classifier.weight"] == [10, 128]
    assert gap(torch.randn(2, 3, 64, 64)).shape == (2, 10)

    for depth in range(1, 5):
        model = create_model(f"ConvNet-{depth}", 3, 10, 32)
        assert sum(isinstance(layer, nn.Conv2d) for layer in model.features) == depth
        side = 32 >> depth
        assert shapes(model)["classifier.weight"] == [10, 128 * side * side]
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_odd_sizes_and_channels():
    model = create_model("ConvNet-3", 5, 4, 28)  # 28 -> 14 -> 7 -> 3
    assert shapes(model)["classifier.weight"] == [4, 128 * 9]
    assert model(torch.randn(2, 5, 28, 28)).shape == (2, 4)


def test_too_deep_convnet_for_the_image_is_an_input_error():
    with pytest.raises(InputError, match="at most 3"):
        create_model("ConvNet-4", 1, 10, 8)
    create_model("ConvNet-3", 1, 10, 8)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_non_positive_or_non_integer_arguments(bad):
    with pytest.raises(InputError):
        create_model("ConvNet-3", bad, 10, 32)


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("ConvNet", "ConvNet-3"),
        ("convnet-3", "ConvNet-3"),
        ("ConvNetD3", "ConvNet-3"),
        ("ConvNetD4BN", "ConvNet-4-BN"),
        ("ConvNetD4", "ConvNet-4"),
        ("ConvNet-4-BN", "ConvNet-4-BN"),
        ("ConvNet-3-W128-IN", "ConvNet-3"),
        ("ConvNetW64", "ConvNet-3-W64"),
        ("ConvNetGAP", "ConvNet-3-GAP"),
        ("ConvNetNN", "ConvNet-3-NN"),
        ("convnet-2-ln", "ConvNet-2-LN"),
        ("VGG11", "VGG-11"),
        ("vgg-16-bn", "VGG-16-BN"),
        ("ResNet18BN", "ResNet-18-BN"),
        ("resnet-50-in", "ResNet-50"),
        ("lenet", "LeNet"),
        ("ALEXNET", "AlexNet"),
        ("mlp", "MLP"),
        ("torchvision:ResNet18", "torchvision:resnet18"),
    ],
)
def test_canonical_spelling(spelling, canonical):
    assert canonical_model_name(spelling) == canonical


def test_listed_names_are_canonical_and_described():
    names = model_names()
    required = ("ConvNet-3", "ConvNet-3-BN", "ResNet-18", "ResNet-18-BN", "VGG-11", "torchvision:resnet18")
    assert set(required) <= set(names)
    assert all(canonical_model_name(name) == name for name in names)
    assert len(set(names)) == len(names)
    described = describe_models()
    assert len(described) == len(MODELS.names()) and all(pattern and text for pattern, text in described)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("ConvNett-3", "ConvNet-3"),
        ("ResNet-19", "ResNet-18"),
        ("torchvision:resnet19", "torchvision:resnet18"),
    ],
)
def test_unknown_names_suggest_close_matches(name, suggestion):
    with pytest.raises(UnknownNameError) as caught:
        create_model(name, 3, 10, 32)
    assert caught.value.kind == "model"
    assert repr(suggestion) in str(caught.value)


def test_torchvision_small_image_stem():
    small = create_model("torchvision:resnet18", 3, 10, 32)
    assert (small.conv1.kernel_size, small.conv1.stride, small.conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert isinstance(small.maxpool, nn.Identity)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)

    large = create_model("torchvision:resnet18", 3, 10, 224)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)
    assert isinstance(large.maxpool, nn.MaxPool2d)

    mobile = create_model("torchvision:mobilenet_v3_small", 3, 10, 32)
    assert mobile.features[0][0].stride == (1, 1)


@pytest.mark.parametrize("name", ["torchvision:resnet18", "torchvision:mobilenet_v3_small"])
def test_torchvision_single_channel(name):
    model = create_model(name, 1, 10, 32)
    first_conv = next(module for module in model.modules() if isinstance(module, nn.Conv2d))
    assert first_conv.in_channels == 1
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert not any(getattr(module, "inplace", False) for module in model.modules())


def test_torchvision_input_too_small_is_reported_at_creation():
    with pytest.raises(InputError, match=r"torchvision:vgg11 cannot take 1x8x8"):
        create_model("torchvision:vgg11", 1, 10, 8)


@pytest.mark.parametrize("name", ["ConvNet-3", "ResNet-18-BN", "torchvision:resnet18"])
def test_same_seed_same_parameters(name):
    torch.manual_seed(7)
    first = create_model(name, 3, 10, 32).state_dict()
    torch.manual_seed(7)
    second = create_model(name, 3, 10, 32).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    torch.manual_seed(8)
    third = create_model(name, 3, 10, 32).state_dict()
    assert not all(torch.equal(first[key], third[key]) for key in first)


def test_uses_batchnorm():
    assert not uses_batchnorm(create_model("ConvNet-3", 3, 10, 32))
    assert uses_batchnorm(create_model("ConvNet-3-BN", 3, 10, 32))
    assert not uses_batchnorm(create_model("ResNet-18", 3, 10, 8))
    assert uses_batchnorm(create_model("ResNet-18-BN", 3, 10, 8))
    assert uses_batchnorm(create_model("torchvision:resnet18", 3, 10, 8))


def test_dc_layouts_of_vgg_and_resnet():
    vgg = shapes(create_model("VGG-11", 3, 10, 32))
    assert vgg["features.0.weight"] == [64, 3, 3, 3] and vgg["features.1.weight"] == [64]
    assert vgg["classifier.weight"] == [10, 512]
    resnet = shapes(create_model("ResNet-18-BN", 3, 10, 32))
    assert resnet["conv1.weight"] == [64, 3, 3, 3] and "bn1.running_mean" in resnet
    assert resnet["layer2.0.shortcut.0.weight"] == [128, 64, 1, 1]
    assert resnet["classifier.weight"] == [10, 512]
    assert shapes(create_model("ResNet-50", 3, 10, 32))["classifier.weight"] == [10, 2048]


def test_vmap_over_stacked_convnets_matches_each_model():
    models = [create_model("ConvNet-3", 3, 10, 32) for _ in range(3)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    x = torch.randn(2, 3, 32, 32)

    def forward(model_params, model_buffers, images):
        return functional_call(base, (model_params, model_buffers), (images,))

    with torch.no_grad():
        batched = torch.vmap(forward, in_dims=(0, 0, None))(params, buffers, x)
        separate = torch.stack([model(x) for model in models])
    torch.testing.assert_close(batched, separate)
