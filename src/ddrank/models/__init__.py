"""The student and teacher model zoo: ``create_model(name, channels, num_classes, size)``.

Families register themselves in :data:`MODELS` when their modules are imported below; the
order of registration is the order in which names are matched and listed.
"""

from ddrank.models import convnet, lenet, alexnet, vgg, resnet, mlp, torchvision_models  # noqa: F401, I001
from ddrank.models.registry import (
    MODELS,
    ModelFamily,
    ModelSpec,
    canonical_model_name,
    create_model,
    describe_models,
    load_state_dict_checked,
    model_names,
    uses_batchnorm,
)

__all__ = [
    "MODELS",
    "ModelFamily",
    "ModelSpec",
    "canonical_model_name",
    "create_model",
    "describe_models",
    "load_state_dict_checked",
    "model_names",
    "uses_batchnorm",
]
