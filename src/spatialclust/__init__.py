"""spatialclust: deep learning on spatial molecular images.

>>> import spatialclust as sc
>>> adata = sc.datasets.simulate_msi(seed=0)

Namespaces follow scanpy: ``io`` (read/write), ``pp`` (preprocessing), ``tl`` (tools: embed,
cluster), ``pl`` (plots), ``metrics``, ``datasets`` (simulators and loaders), ``translate``
(ST -> MSI). PyTorch is imported lazily, only by the deep-learning tools.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spatialclust")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from . import datasets, io, metrics, pl, pp, tl  # noqa: E402
from . import translate  # noqa: E402

__all__ = ["datasets", "io", "metrics", "pl", "pp", "tl", "translate", "__version__"]
