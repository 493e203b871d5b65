#!/usr/bin/env bash
# Rebuild the FF-G2M zoo entries from scratch: train and export the teachers and the student (seed 0),
# run the evidence arms (5 seeds), draw the figure and regenerate MODEL_CARDS.md.
# Needs Cora in Planetoid format: PLANETOID_ROOT (default ../shared/data/planetoid; PyG downloads it
# into a writable root when the machine has network). About 40 minutes on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${PLANETOID_ROOT:-../shared/data/planetoid}
SEEDS=${SEEDS:-5}
QUIET=(--trainer.logger=false --trainer.enable_progress_bar=false --trainer.enable_model_summary=false)

fit_export() {  # NAME ARGS...: fit with seed 0, export the best-validation checkpoint as zoo entry NAME
  local name=$1 dir=runs/publish/$1
  shift
  rm -rf "$dir"
  python cli.py fit "$@" "${QUIET[@]}" --trainer.default_root_dir="$dir"
  python cli.py zoo export "$dir/checkpoints/best.ckpt" --name "$name" --overwrite
}

fit_export gcn-csbm --config recipes/graph_mlp/tiny_teacher.yaml
fit_export gcn-cora --config recipes/graph_mlp/teacher.yaml --data.init_args.root="$ROOT"
fit_export gcn-cora-ind --config recipes/graph_mlp/teacher.yaml --data.init_args.root="$ROOT" \
  --data.init_args.setting=ind
fit_export ffg2m-cora-gcn-mlp --config recipes/graph_mlp/distill.yaml --data.init_args.root="$ROOT"
python cli.py zoo evidence ffg2m-cora-gcn-mlp --seeds "$SEEDS"
python scripts/plot_evidence.py ffg2m-cora-gcn-mlp
python cli.py zoo cards
