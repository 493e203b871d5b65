"""Bar chart of an entry's evidence rows (mean ± std over seeds), with reference values as markers.

    python scripts/plot_evidence.py NAME [--out docs/figures/NAME-evidence.png]

Arms named "... (ind)" are drawn as a second group. A paper row whose ``arm`` matches one of ours and
whose ``value`` is a plain number is drawn as a black diamond beside our bar, labelled as the official code on
the same split only when every drawn row's source says "same split".
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo import registry, schema  # noqa: E402

ROLE_COLORS = {"baseline": "#d08c60", "reference": "#9e9e9e", "distilled": "#4c78a8"}


def bar_color(label: str, role: str | None = None) -> str:
    """An arm's ``role`` in the metafile (baseline, reference, distilled) picks its colour; without one,
    orange for no-teacher and equal-budget random baselines, grey for teachers, full data and other
    references, blue for distilled arms."""
    if role is not None:
        if role not in ROLE_COLORS:
            raise SystemExit(f"arm {label!r} has role {role!r}; expected one of {sorted(ROLE_COLORS)}")
        return ROLE_COLORS[role]
    low = label.lower()
    if "without" in low or "random" in low:
        return "#d08c60"
    if "teacher" in low or "full" in low or "size" in low:
        return "#9e9e9e"
    return "#4c78a8"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--metric", help="chart this extra metric of the rows instead of the headline one")
    args = parser.parse_args()
    entry = registry.get(args.name, pending=True)
    results = entry.meta.results
    rows, metric, paper_rows = results.rows, results.metric or "metric", results.paper_rows
    if not rows:
        raise SystemExit(f"{args.name} has no result rows; run python cli.py zoo evidence {args.name} first")
    if args.metric and any(r.metric == args.metric for r in rows):  # arms whose own headline this is
        rows, metric, paper_rows = [r for r in rows if r.metric == args.metric], args.metric, []
    elif args.metric:
        rows = [r for r in rows if r.metric is None]
        missing = [r.arm for r in rows if args.metric not in r.metrics]
        if missing:
            raise SystemExit(f"{args.metric!r} is not in the rows of {missing}")
        rows = [dataclasses.replace(r, **{k: getattr(r.metrics[args.metric], k) for k in ("mean", "std", "n")})
                for r in rows]  # fmt: skip
        metric, paper_rows = args.metric, []
    else:
        rows = [r for r in rows if r.metric is None]  # arms with another headline have their own chart
    ours = {r.arm for r in rows}
    reference, sources = {}, []
    for row in paper_rows:  # a plain number only: "98.7% of its teacher" is not an accuracy to plot
        match = re.fullmatch(r"\s*([\d.]+)\s*", str(row.value))
        if match and row.arm in ours:
            reference[row.arm] = float(match.group(1))
            sources.append(str(row.source))
    same_split = bool(sources) and all("same split" in s for s in sources)
    spec = entry.meta.evidence
    # accuracies and AUCs in %: a 0-100 axis; else (an extra metric is unscaled) fit the data
    percent = spec is not None and spec.scale == 100 and metric == results.metric
    roles = {a.arm: a.role for a in spec.arms} if spec else {}

    groups: dict[str, list[schema.Row]] = {}
    for row in rows:
        inductive = any(r.arm.endswith("(ind)") for r in rows)
        group = ("inductive" if row.arm.endswith("(ind)") else "transductive") if inductive else ""
        groups.setdefault(group, []).append(row)
    width = max(5.2, 1.5 * max(len(items) for items in groups.values()))
    fig, axes = plt.subplots(1, len(groups), figsize=(width * len(groups), 4.6), sharey=True, squeeze=False)
    has_top = False
    for ax, (group, items) in zip(axes[0], groups.items()):
        labels = [r.arm.removesuffix(" (ind)") for r in items]
        means, stds = [r.mean for r in items], [r.std or 0.0 for r in items]
        ax.bar(
            range(len(items)),
            means,
            yerr=stds,
            capsize=4,
            color=[bar_color(lab, roles.get(r.arm)) for lab, r in zip(labels, items)],
        )
        marks = [reference[r.arm] for r in items if r.arm in reference]
        low = min([m - s for m, s in zip(means, stds)] + marks)
        high = max([m + s for m, s in zip(means, stds)] + marks)
        pad = 0.15 * (high - low) or 0.05 * abs(high) or 1.0
        bottom, ceiling = (max(0.0, low - 8), max(100.0, high + 6)) if percent else (low - 3 * pad, high + 2 * pad)
        digits = 1 if percent else max(2, -int(f"{high - low:e}".split("e")[1]))
        for i, row in enumerate(items):
            top = row.mean + (row.std or 0.0)  # the bar's own value sits on the bar, the marker's beside it
            ax.text(i, top + 0.02 * (ceiling - bottom), f"{row.mean:.{digits}f}", ha="center", fontsize=8)
            if row.arm in reference:
                ax.plot(i, reference[row.arm], "kD", markersize=5)
                ax.text(i + 0.08, reference[row.arm], f"{reference[row.arm]:.{digits}f}", va="center", fontsize=7)
            if row.top_mean is not None:
                has_top = True
                ax.plot(i, row.top_mean, marker="_", color="crimson", markersize=16, mew=2)
        ax.set_xticks(range(len(items)), [textwrap.fill(lab, 18) for lab in labels], fontsize=8)
        title = (spec.title if spec else None) or entry.meta.data.get("name", "")
        if args.metric:  # another headline than the evidence's title names
            title = f"{args.name}: {args.metric}"
        ns = sorted({r.n or 1 for r in items})
        seeds = f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}-{ns[-1]}"
        ax.set_title(textwrap.fill(" ".join(f"{title} {group}".split()) + f", {seeds} seeds", 50), fontsize=10)
        ax.set_ylim(bottom, ceiling)
        ax.grid(axis="y", alpha=0.3)
    unit = " (%)" if percent else ""
    axes[0][0].set_ylabel(f"{metric}{unit}, mean ± std")
    if reference:
        label = "official code, same split" if same_split else "published number, other settings (see the card)"
        axes[0][0].plot([], [], "kD", label=label)
    if has_top:
        k = max(r.top_k for r in rows)
        axes[0][0].plot(
            [], [], marker="_", color="crimson", ls="", markersize=12, mew=2, label=f"mean of the top {k} by validation"
        )
    if reference or has_top:
        axes[0][0].legend(loc="lower left", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    suffix = args.metric.split("/")[-1].replace("_", "-") if args.metric else "evidence"
    out = args.out or ROOT / "docs" / "figures" / f"{args.name}-{suffix}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
