"""models."""

from ._backbones import (
    Backbone,
    BackboneConfig,
    WeightsError,
    backbones,
    create_backbone,
    list_backbones,
    register_backbone,
)
from ._checkpoint import check_checkpoint_path

__all__: list[str] = [
    "check_checkpoint_path",
    "Backbone",
    "BackboneConfig",
    "WeightsError",
    "backbones",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]
