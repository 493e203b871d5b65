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

import collections.abc
import difflib
import functools
import importlib
import inspect
import numbers
import os
import reprlib
import types
import typing
from typing import Any, Literal, TypeVar

import numpy as np
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
        given = {k: v for k, v in list(bound.arguments.items())[1:]}
        bound.apply_defaults()
        recorded = {k: v for k, v in list(bound.arguments.items())[1:]}
        for name, param in signature.parameters.items():
            if param.kind is param.VAR_KEYWORD:
                recorded.update(recorded.pop(name, {}))
            elif param.kind is param.VAR_POSITIONAL:
                raise TypeError(f"{cls.__qualname__}: *args cannot be recorded for export; use named arguments")
        try:
            original(self, *args, **kwargs)
        except (TypeError, RuntimeError) as err:
            if type(self) is not cls or type(err) not in (TypeError, RuntimeError):
                raise
            # torch's own errors (a negative size, a None width) name neither the network nor its arguments
            shown = ", ".join(f"{k}={reprlib.repr(v)}" for k, v in given.items())
            raise type(err)(f"{cls.__qualname__}({shown}): {err}") from err
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


def _allow_listed(path: Any, registry: dict[str, type], packages: tuple[str, ...], doing: str, outside: str,
                  unmarked: str) -> type:  # fmt: skip
    """The class registered at ``path``, importing its module only when ``path`` lies in ``packages``."""
    if not isinstance(path, str) or path.split(".", 1)[0] not in packages or "." not in path:
        raise PermissionError(f"refusing to {doing} {path!r}: {outside}")
    if path not in registry:
        module_name = path.rpartition(".")[0]
        try:
            importlib.import_module(module_name)
        except ImportError as err:
            raise ImportError(f"cannot import {module_name!r} to {doing} {path!r}: {err}") from err
    if path not in registry:
        close = difflib.get_close_matches(path, list(registry), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise PermissionError(f"refusing to {doing} {path!r}: {unmarked}{hint}")
    return registry[path]


def resolve_class(path: str) -> type[nn.Module]:
    """The registered class at ``path``; a path outside the trusted packages is refused before import."""
    outside = (f"only classes of the project's own packages ({', '.join(TRUSTED_PACKAGES)}) marked @exportable "
               "can be built from a spec")  # fmt: skip
    return _allow_listed(path, REGISTRY, TRUSTED_PACKAGES, "build", outside, "it is not an @exportable network")


# ----- stored datasets: the loaders of ``kind: dataset`` entries, allow-listed the same way ----------------
LOADER_PACKAGES = ("datamodules",)
LOADERS: dict[str, type] = {}


def stored_dataset(cls: type) -> type:
    """Class decorator: ``cls`` turns a dataset entry's tensors into a dataset (``cls.from_tensors``) and back
    (``cls.to_tensors(items)``), and the zoo may load entries that name it (the zoo itself knows no field)."""
    for method in ("from_tensors", "to_tensors"):
        if not callable(getattr(cls, method, None)):
            raise TypeError(f"@stored_dataset needs classmethods from_tensors and to_tensors; {cls!r} lacks {method}")
    LOADERS[class_path(cls)] = cls
    return cls


def resolve_loader(path: str) -> type:
    """The registered dataset loader at ``path``; a path outside the project's data packages is refused before
    anything is imported, one inside them must carry ``@stored_dataset``."""
    outside = f"only @stored_dataset classes of {', '.join(LOADER_PACKAGES)} load dataset entries"
    return _allow_listed(path, LOADERS, LOADER_PACKAGES, "load a dataset with", outside, "it is not a @stored_dataset")


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON-like ``value`` fits the annotation ``hint``; annotations this cannot judge (a class, a
    callable, a forward reference) count as fitting, and the constructor has the last word."""
    if hint is Any or isinstance(hint, (str, TypeVar)):
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if hint is str:
        return isinstance(value, (str, os.PathLike))
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):  # JSON turns a tuple into a list: either is a sequence
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        return not args or all(_fits(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping) or hint in (dict, collections.abc.Mapping):
        return isinstance(value, dict) and (len(args) != 2 or all(_fits(v, args[1]) for v in value.values()))
    return True


def _hint_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def check_init_args(cls: type[nn.Module], init_args: dict[str, Any], what: str) -> None:
    """ValueError naming ``what`` (the spec and where it came from), the class and the argument, for an
    argument ``cls`` does not take, a required one that is missing, or a value of another type than its
    annotation: a spec from a file must fail here, in words, not deep inside a constructor."""
    signature = inspect.signature(cls.__init__)
    params = {k: p for k, p in list(signature.parameters.items())[1:] if p.kind not in (p.VAR_POSITIONAL,)}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = {k: p for k, p in params.items() if p.kind is not p.VAR_KEYWORD}
    unknown = [k for k in init_args if k not in named]
    if unknown and not takes_any:
        close = {k: difflib.get_close_matches(k, list(named), n=1) for k in unknown}
        hints = [f"{k!r}" + (f" (did you mean {c[0]!r}?)" if c else "") for k, c in close.items()]
        raise ValueError(
            f"{what}: {cls.__qualname__} takes no argument {', '.join(hints)}; it takes {', '.join(named)}"
        )
    missing = [k for k, p in named.items() if p.default is p.empty and k not in init_args]
    if missing:
        raise ValueError(f"{what}: {cls.__qualname__} needs {', '.join(map(repr, missing))}, which init_args lacks")
    try:  # the project's modules use postponed annotations: evaluate them in the class's module
        hints = typing.get_type_hints(inspect.unwrap(cls.__init__))
    except Exception:  # an annotation that does not evaluate is left to the constructor to judge
        hints = {}
    for key, value in init_args.items():
        if key in hints and not _fits(value, hints[key]):
            raise ValueError(
                f"{what}: {cls.__qualname__} argument {key!r} must be {_hint_name(hints[key])}, "
                f"got {type(value).__name__} {value!r}"
            )


def build(spec: dict[str, Any], source: str | None = None) -> nn.Module:
    """Instantiate an allow-listed ``{class_path, init_args}``; ``source`` (a file, ``zoo:NAME``) is named in
    every error, with the class and the argument at fault."""
    where = f" (from {source})" if source else ""
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"a network spec must be a mapping with class_path (and init_args){where}; got {spec!r}")
    path = spec["class_path"]
    if not isinstance(path, str):
        raise ValueError(f"spec class_path{where} must be a string naming a class, got {type(path).__name__} {path!r}")
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise ValueError(f"spec {path!r}{where}: init_args must be a mapping, got {type(init_args).__name__}")
    cls = resolve_class(path)
    what = f"spec {path!r}{where}"
    check_init_args(cls, init_args, what)
    try:
        return cls(**init_args)
    except (TypeError, ValueError, RuntimeError) as err:  # a value of the right type the network refuses
        raise ValueError(f"{what}: {err}") from err
