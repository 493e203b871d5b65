"""Publish a Mirage distilled set at the support chosen by scripts/mirage_sweep.py, and (re)write its
evidence arms: GIN and GCN on the full training set, on the distilled set, on random graphs of the same
bytes, and on the distilled set with mean pooling, plus the graph-size-only baseline.

    python scripts/publish_mirage.py NAME            # then: python cli.py zoo evidence NAME --seeds 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mirage_sweep import mirage_datamodule  # noqa: E402

from zoo import export, registry  # noqa: E402

RECIPE = "recipes/mirage/distill.yaml"


def arms(base: list[str], support: float) -> list[dict]:
    out = []
    for conv in ("gin", "gcn"):
        common = [
            *base,
            f"--model.init_args.student.init_args.conv={conv}",
            f"--data.init_args.miner.init_args.support={support}",
        ]
        for arm, extra in (
            ("full training set", ["--data.init_args.train_on=full"]),
            ("Mirage", ["--data.init_args.train_on=mirage"]),
            ("random graphs, same bytes", ["--data.init_args.train_on=random"]),
            (
                "Mirage, mean pooling",
                ["--data.init_args.train_on=mirage", "--model.init_args.student.init_args.pool=mean"],
            ),
        ):
            out.append({"arm": f"{conv.upper()}, {arm}", "config": [RECIPE], "args": [*common, *extra]})
    size_only = ["--model.init_args.student=modules.mirage.GraphSizeClassifier", "--data.init_args.train_on=full"]
    out.append({"arm": "graph size only, full training set", "config": [RECIPE], "args": [*base, *size_only]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    args = parser.parse_args()
    entry = registry.get(args.name)
    sweep = entry.raw["sweep"]
    support = float(entry.raw["results"]["sweep"]["chosen_support"])
    dm = mirage_datamodule(sweep, support)
    dm.setup()
    stats = {k: round(v, 5) if isinstance(v, float) else v for k, v in dm.stats.items()}
    fields = {
        "distilled_set": {"support": support, "depth": dm.miner.depth, **stats},
        "evidence": {
            "metric": "test/auroc",
            "scale": 100,
            "top_k": 5,
            "selection": "test ROC-AUC at the best-validation-AUC epoch (early stop after 25 epochs without "
            f"improvement); support {support} chosen on validation AUC by scripts/mirage_sweep.py",
            "arms": arms(sweep["args"], support),
        },
    }
    print(export.export_graphs(dm.train_set, args.name, fields, overwrite=True), stats)


if __name__ == "__main__":
    main()
