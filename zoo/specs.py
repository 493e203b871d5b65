"""Constructor specs: the one way a network records how to rebuild it, and the allow-list of what the zoo
may build.

``@exportable`` on an ``nn.Module`` class records every constructor argument (defaults filled in) as
``self.init_args`` and registers the class by its import path. ``module_spec(net)`` gives the
``{class_path, init_args}`` that rebuilds ``net``; ``build(spec)`` rebuilds it, and builds nothing that is
not registered: a class path outside the project's own packages is refused before anything is imported,
and one inside them must carry the decorator. So a spec from a metafile or a weights file's metadata can
only ever call a constructor this project wrote and vouches for (timm models go through the exportable
wrapper in ``modules/nets``).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
from typing import Any, TypeVar

from torch import nn

# the packages whose modules may be imported to build a spec; everything else is refused unimported
TRUSTED_PACKAGES = ("modules",)
REGISTRY: dict[str, type[nn.Module]] = {}

M = TypeVar("M", bound=type[nn.Module])


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def exportable(cls: M) -> M:
    """Class decorator: record constructor arguments as ``init_args`` and allow the zoo to build ``cls``.
    A class attribute ``spec_overrides`` replaces recorded arguments that must not be replayed on rebuild."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"@exportable needs an nn.Module subclass, got {cls!r}")
    signature = inspect.signature(cls.__init__)
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        recorded = {k: v for k, v in list(bound.arguments.items())[1:]}
        for name, param in signature.parameters.items():
            if param.kind is param.VAR_KEYWORD:
                recorded.update(recorded.pop(name, {}))
            elif param.kind is param.VAR_POSITIONAL:
                raise TypeError(f"{cls.__qualname__}: *args cannot be recorded for export; use named arguments")
        original(self, *args, **kwargs)
        if type(self) is cls:  # a subclass records its own arguments
            # e.g. TimmViT's pretrained=False: the rebuilt network gets its weights from the zoo, not a hub
            self.init_args = recorded | dict(getattr(cls, "spec_overrides", {}))

    cls.__init__ = __init__
    REGISTRY[class_path(cls)] = cls
    return cls


def register_alias(path: str, cls: type[nn.Module]) -> None:
    """Also build ``cls`` from ``path``: a network moved to another file keeps the class path that published
    entries store (``path``'s module must import ``cls``, so that resolving it finds the alias)."""
    if class_path(cls) not in REGISTRY:
        raise TypeError(f"{class_path(cls)} must be @exportable before it gets an alias")
    REGISTRY[path] = cls


def is_exportable(module: nn.Module) -> bool:
    return class_path(type(module)) in REGISTRY and isinstance(getattr(module, "init_args", None), dict)


def module_spec(module: nn.Module) -> dict[str, Any]:
    """The ``{class_path, init_args}`` that rebuilds ``module``."""
    if not is_exportable(module):
        raise TypeError(
            f"{class_path(type(module))} cannot be exported: it is not decorated with @zoo.specs.exportable "
            "(which records its constructor arguments and puts it on the zoo's allow-list)"
        )
    return {"class_path": class_path(type(module)), "init_args": dict(module.init_args)}


def resolve_class(path: str) -> type[nn.Module]:
    """The registered class at ``path``; a path outside the trusted packages is refused before import."""
    if not isinstance(path, str) or path.split(".", 1)[0] not in TRUSTED_PACKAGES or "." not in path:
        raise PermissionError(
            f"refusing to build {path!r}: only classes of the project's own packages "
            f"({', '.join(TRUSTED_PACKAGES)}) marked @exportable can be built from a spec"
        )
    module_name = path.rpartition(".")[0]
    if path not in REGISTRY:
        try:
            importlib.import_module(module_name)
        except ImportError as err:
            raise ImportError(f"cannot import {module_name!r} for spec class {path!r}: {err}") from err
    if path not in REGISTRY:
        close = difflib.get_close_matches(path, list(REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise PermissionError(f"refusing to build {path!r}: it is not an @exportable network{hint}")
    return REGISTRY[path]


def build(spec: dict[str, Any]) -> nn.Module:
    """Instantiate an allow-listed ``{class_path, init_args}``."""
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"a network spec must be a mapping with class_path (and init_args); got {spec!r}")
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise ValueError(f"spec {spec['class_path']!r}: init_args must be a mapping, got {type(init_args).__name__}")
    cls = resolve_class(spec["class_path"])
    try:
        return cls(**init_args)
    except TypeError as err:
        raise TypeError(f"spec {spec['class_path']!r} does not fit its constructor: {err}") from err
