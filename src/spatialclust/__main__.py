"""``python -m spatialclust``: the ``spatialclust`` command."""

from .cli import main

main()
