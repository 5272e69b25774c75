"""tl."""

__all__: list[str] = []
