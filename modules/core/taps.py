"""Record intermediate outputs of named submodules (MMRazor's recorders, by dotted module path)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle


class FeatureTaps:
    """Forward hooks on submodules named by dotted path, recording their outputs for one forward.

    ``with FeatureTaps(model, {"s3": "blocks.3"}) as taps: model(x); taps["s3"]``. A path that does
    not exist fails at construction and lists the closest valid paths. Outputs are kept as the
    module returned them (with grad), and are cleared each time the context is entered. Where a
    model has its own intermediate API (timm's ``forward_intermediates``), prefer that.
    """

    def __init__(self, model: nn.Module, paths: Mapping[str, str]) -> None:
        modules = dict(model.named_modules())
        for name, path in paths.items():
            if path not in modules:
                close = difflib.get_close_matches(path, [p for p in modules if p], n=5, cutoff=0.3)
                raise KeyError(
                    f"FeatureTaps: {type(model).__name__} has no submodule {path!r} (tap {name!r}); "
                    f"closest valid paths: {', '.join(close) or 'none'}"
                )
        self.model = model
        self.paths = dict(paths)
        self.outputs: dict[str, Any] = {}
        self._handles: list[RemovableHandle] = []
        self._modules = {name: modules[path] for name, path in self.paths.items()}

    def _record(self, name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self.outputs[name] = output

        return hook

    def __enter__(self) -> FeatureTaps:
        self.outputs.clear()
        self._handles = [m.register_forward_hook(self._record(n)) for n, m in self._modules.items()]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __getitem__(self, name: str) -> Any:
        if name not in self.outputs:
            raise KeyError(
                f"FeatureTaps: tap {name!r} recorded nothing; did the forward reach {self.paths.get(name)!r}?"
            )
        return self.outputs[name]
