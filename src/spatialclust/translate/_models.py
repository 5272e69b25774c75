"""Registries of the stage-1 (presence) and stage-2 (intensity) models, by name."""

from __future__ import annotations

from typing import Any

from .._registry import Registry
from ._estimators import LinearIntensityRegressor, LinearPresenceClassifier, PrevalencePresence
from ._neural import MLPIntensityRegressor, MLPPresenceClassifier, TransformerIntensityRegressor

__all__ = ["create_intensity_model", "create_presence_model", "list_intensity_models", "list_presence_models"]

presence_models: Registry = Registry("presence model", parameter="presence_model")
intensity_models: Registry = Registry("intensity model", parameter="intensity_model")

presence_models.register("logistic")(lambda **kw: LinearPresenceClassifier(kind="logistic", **kw))
presence_models.register("svm")(lambda **kw: LinearPresenceClassifier(kind="svm", **kw))
presence_models.register("mlp")(MLPPresenceClassifier)
presence_models.register("prevalence")(PrevalencePresence)

intensity_models.register("mean")(lambda **kw: LinearIntensityRegressor(kind="mean", **kw))
intensity_models.register("linear")(lambda **kw: LinearIntensityRegressor(kind="linear", **kw))
intensity_models.register("ridge")(lambda **kw: LinearIntensityRegressor(kind="ridge", **kw))
intensity_models.register("mlp")(MLPIntensityRegressor)
intensity_models.register("transformer")(TransformerIntensityRegressor)


def create_presence_model(name: str, **params: Any):
    """Stage-1 model by name: ``logistic``, ``svm``, ``mlp`` or the ``prevalence`` baseline."""
    return presence_models.create(name, **params)


def create_intensity_model(name: str, **params: Any):
    """Stage-2 model by name: ``mean``, ``linear``, ``ridge``, ``mlp`` or ``transformer``."""
    return intensity_models.create(name, **params)


def list_presence_models() -> list[str]:
    return presence_models.names()


def list_intensity_models() -> list[str]:
    return intensity_models.names()
