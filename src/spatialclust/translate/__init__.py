"""translate."""

__all__: list[str] = []
