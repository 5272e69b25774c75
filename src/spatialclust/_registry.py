"""Name -> factory registries for embedders, clusterers, backbones and other pluggable parts.

Modelled on timm's ``register_model`` / ``create_model``: every pluggable part is registered
under a name, created by one factory, listed by ``names()``, and an unknown name raises an
error that lists the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: Every registry by its ``kind``, filled as the registries are created (see :func:`registry`).
_REGISTRIES: dict[str, Registry[Any]] = {}


def invalid_option(value: object, parameter: str, valid: list[str] | tuple[str, ...]) -> ValueError:
    """Error for an invalid choice, in the wording used throughout the package."""
    options = ", ".join(f"`{v}`" for v in valid)
    return ValueError(f"Invalid option `{value}` for `{parameter}`. Valid options are: {options}.")


class Registry(Generic[T]):
    """A registry of named factories of one kind (e.g. "embedder").

    Parameters
    ----------
    kind
        What is registered, used in error messages and as the parameter name (``method``).
    parameter
        Name of the user-facing parameter that selects an entry.
    """

    def __init__(self, kind: str, *, parameter: str = "method") -> None:
        self.kind = kind
        self.parameter = parameter
        self._factories: dict[str, Callable[..., T]] = {}
        _REGISTRIES[kind] = self

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` (a class or function) under ``name``."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"A {self.kind} named {name!r} is already registered.")
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered under ``name``; unknown names list the valid ones."""
        try:
            return self._factories[name]
        except KeyError:
            raise invalid_option(name, self.parameter, self.names()) from None

    def create(self, name: str, **params: Any) -> T:
        """Build the entry registered under ``name`` with ``params``."""
        return self.get(name)(**params)

    def __contains__(self, name: object) -> bool:
        return name in self._factories


def registry(kind: str) -> Registry[Any]:
    """The registry of ``kind`` (``"embedder"``, ``"clusterer"``, ``"backbone"``, ...).

    Lets a lower layer accept a registered name without importing the layer that registers the
    entries (``metrics`` takes an embedder name, the embedders live in ``tl``): the entries are
    registered when the package is imported, since ``import spatialclust`` imports every layer.
    """
    try:
        return _REGISTRIES[kind]
    except KeyError:
        raise invalid_option(kind, "kind", sorted(_REGISTRIES)) from None
