"""Position builders: position ids for methods that change positions, not frequencies."""
from __future__ import annotations

__all__: list = []
