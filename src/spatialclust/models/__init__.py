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

__all__: list[str] = [
    "Backbone",
    "BackboneConfig",
    "WeightsError",
    "backbones",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]
