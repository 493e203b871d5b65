"""The distillzoo model zoo: ``zoo.list()``, ``zoo.get(name)``, ``zoo.load(name)``.

``zoo.load(name)`` returns the distilled student, weights verified by sha256 and in eval mode,
taking its input exactly as the field's standard reader returns it.
"""

from __future__ import annotations

from torch import nn

from zoo import registry, store
from zoo.registry import Entry


def list() -> list[str]:  # noqa: A001 - the public API is zoo.list(), like torch.hub.list
    """Names of all zoo entries."""
    return registry.list_entries()


def get(name: str) -> Entry:
    """The metafile of entry ``name`` (unknown names fail with the closest known names)."""
    return registry.get(name)


def load(name: str) -> nn.Module:
    """The ready student of entry ``name`` (``zoo:`` prefix optional), in eval mode."""
    return store.load(name if name.startswith("zoo:") else f"zoo:{name}")


__all__ = ["Entry", "get", "list", "load"]
