"""distillzoo's command line: LightningCLI ``fit | validate | test | predict`` from YAML recipes,
plus ``zoo list | show | verify | export | cards | evidence``.

    python cli.py fit --config recipes/graph_mlp/tiny.yaml
    python cli.py zoo list
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

import zoo
from datamodules.base import DATA_ENV
from modules.core.callbacks import ResumableRandomState
from zoo import cards, evidence, export, publish, registry, schema, store


class DistillCLI(LightningCLI):
    """LightningCLI in subclass mode (recipes name ``class_path: modules.graph_mlp.FFG2M``), a CSV
    logger by default, the resolved config saved with every run, and ``--test_after_fit`` to test
    the best-validation checkpoint right after ``fit`` (how the evidence runs select the epoch)."""

    test_metrics: dict[str, float]
    test_samples: dict[str, list[float]]  # per-sample test scores of a module that keeps them (sample_scores())
    best_val: float | None  # the monitored validation score of the tested checkpoint
    best_ckpt: str | None  # the tested checkpoint's path

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="after fit, test the best checkpoint of ModelCheckpoint (else the final weights)",
        )

    def parse_arguments(self, parser: Any, args: Any) -> None:
        """Parse, then check a ``--ckpt_path`` before Lightning opens it: a file that is not a Lightning
        checkpoint fails naming the file, not as torch's paragraph on ``weights_only`` or an AttributeError."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not isinstance(path, str) or path in ("best", "last", "hpc") or path.startswith("registry"):
            return  # Lightning's own names for a checkpoint it finds itself
        if "://" not in path:  # a remote checkpoint is Lightning's (fsspec) to open
            export.read_checkpoint(path, mmap=True)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """Lightning's trainer, with :class:`ResumableRandomState` among its callbacks (a recipe's own list
        keeps it), so every fit resumed from a checkpoint continues the run it was, not another one."""
        trainer = super().instantiate_trainer(**kwargs)
        if not any(isinstance(c, ResumableRandomState) for c in trainer.callbacks):
            trainer.callbacks.append(ResumableRandomState())
        return trainer

    def after_fit(self) -> None:
        self.test_metrics, self.test_samples, self.best_ckpt = {}, {}, None
        if not self.config[self.subcommand].get("test_after_fit"):
            return
        callbacks = [c for c in self.trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
        # a monitored checkpoint selects the epoch; without one, the latest (e.g. evidence_fit's resume point)
        selecting = [c for c in callbacks if c.monitor is not None] or callbacks
        best = next((c.best_model_path for c in selecting if c.best_model_path), None)
        if (
            isinstance(self.trainer.checkpoint_callback, ModelCheckpoint)
            and best is None
            and not self.trainer.fast_dev_run
        ):
            raise RuntimeError(
                "--test_after_fit: no best checkpoint was saved; does ModelCheckpoint monitor a logged metric?"
            )
        scores = [c.best_model_score for c in selecting if c.best_model_score is not None]
        self.best_val = float(scores[0]) if scores else None
        self.best_ckpt = best
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best, weights_only=True)
        self.test_metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
        self.test_samples = getattr(self.model, "sample_scores", dict)()


# Output a user need not act on: Lightning's advertising tip, the warning about modules in eval mode at the
# start of training (the frozen teacher, always in eval by design) and deprecations inside the libraries.
QUIET_WARNINGS = (
    (r"Found \d+ module\(s\) in eval mode", UserWarning),
    (r".*isinstance\(treespec, LeafSpec\)", Warning),  # lightning's own use of torch's pytree API
    (r"`torch.jit.script` is deprecated", FutureWarning),  # torchaudio / pesq internals
    ("LightningCLI's args parameter", UserWarning),  # main(args) is the in-process entry point by design
)


class _DropTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet() -> None:
    """Silence what the project knows to be intended, so a user sees progress bars and results."""
    for message, category in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTip) for f in rank_zero.filters):
        rank_zero.addFilter(_DropTip())


def lightning_main(args: list[str], run: bool = True) -> DistillCLI:
    """``run=False``: no subcommand, just build the model, datamodule and trainer that ``args`` (configs and
    overrides) describe, composed exactly as ``fit`` would (how scripts rebuild an evidence arm's data)."""
    quiet()
    check_config_files(args)
    return DistillCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"exit_on_error": False},  # console_main prints the report and its root cause last
        trainer_defaults={
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
            # mixed precision wherever a GPU is present; a recipe or --trainer.precision overrides it
            "precision": "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true",
        },
        args=args,
        run=run,
    )


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """The mapping a YAML file holds, or an error naming ``what``, the file and (for bad YAML) the line."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} {'is a folder' if path.is_dir() else 'does not exist'}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{what} {path} is not valid YAML{where}: {problem}") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {path} is not a text file: {err}") from err
    if not isinstance(data, dict):
        got = "empty" if data is None else f"a {type(data).__name__}"
        raise ValueError(f"{what} {path} must hold a YAML mapping of keys, but it is {got}")
    return data


def check_config_files(args: list[str]) -> None:
    """Every existing ``--config``/``-c`` file must be a YAML mapping: jsonargparse's own report of bad YAML
    names neither the file nor the problem's line, and of a list or an empty file only its last item.
    (A value that is no file is left to jsonargparse, which reads it as inline YAML or names it as missing.)"""
    for i, arg in enumerate(args):
        name, _, value = arg.partition("=")
        if name in ("--config", "-c") and not value and i + 1 < len(args):
            value = args[i + 1]
        if name in ("--config", "-c") and value and Path(value).expanduser().is_file():
            read_yaml_mapping(Path(value).expanduser(), "config file")


RESUME_ROOT = registry.REPO_ROOT / "runs" / "fits"  # unfinished evidence fits, resumed from their last epoch


def join_csv(parts: list[Path], out: Path) -> None:
    """Concatenate CSV files (the curve of a fit that resumed, piece by piece) under the union of their
    columns; missing parts are skipped."""
    import csv

    rows, columns = [], {}
    for part in parts:
        if part.is_file():
            with open(part, newline="") as handle:
                reader = csv.DictReader(handle)
                columns.update(dict.fromkeys(reader.fieldnames or []))
                rows += list(reader)
    if rows:
        with open(out, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(rows)


def fit_dir(arm: schema.Arm, seed: int) -> Path:
    """Where evidence_fit works on ``arm`` at ``seed`` (kept until the fit ends, so a new session resumes)."""
    return RESUME_ROOT / f"{evidence.arm_slug(arm)}-{evidence.fingerprint(arm)}-seed{seed}"


def evidence_fit(
    arm: schema.Arm, seed: int, keep: Path | None = None, keep_as: Path | None = None
) -> tuple[dict[str, float], float | None, dict[str, list[float]]]:
    """One evidence run: ``fit --test_after_fit`` of an arm's configs and overrides at ``seed``; every test
    metric, the validation score that selected the tested checkpoint and the per-sample test scores of a
    module that keeps them (``sample_scores()``, else empty). With ``keep``, seed 0's tested
    checkpoint is copied to ``keep/<arm slug>.ckpt`` (for export or figures); with ``keep_as`` (a stage
    that later arms start from), the tested checkpoint of any seed is written there atomically. Each kept
    checkpoint gets the fit's logged curves beside it (``<same stem>.metrics.csv``, Lightning's CSVLogger).

    A fit resumes: it works in ``runs/fits/<arm slug>-<fingerprint>-seed<k>/``, where an extra
    ``ModelCheckpoint`` writes ``last.ckpt`` after every epoch; a fit that finds one there (its session
    ended mid-run) continues from it (``--ckpt_path``) with the same configs, and a finished fit removes
    its folder."""
    workdir = fit_dir(arm, seed)
    last = workdir / "resume" / "last.ckpt"
    args = ["fit", *(f"--config={c}" for c in arm.config), *arm.args]
    args += [
        f"--seed_everything={seed}",
        "--test_after_fit=true",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",  # the curves, kept beside kept checkpoints
        f"--trainer.logger.save_dir={workdir}",
        "--trainer.logger.name=log",
        "--trainer.logger.version=0",  # one folder, appended to by a resumed fit
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={workdir}",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={workdir / 'resume'}",
        "--trainer.callbacks.filename=last",  # unmonitored top-1: the latest epoch, overwritten in place
        "--trainer.callbacks.enable_version_counter=false",
    ]
    if not last.is_file():  # a recipe's own save_last checkpoint serves as well
        last = workdir / "checkpoints" / "last.ckpt"
    logged = workdir / "log" / "version_0" / "metrics.csv"  # every logged metric by step (CSVLogger)
    if last.is_file():
        print(f"[evidence] resuming {arm.arm!r} seed {seed} from {last}", flush=True)
        args.append(f"--ckpt_path={last}")
        if logged.is_file():  # CSVLogger deletes it when a run starts: keep the curve so far
            logged.rename(workdir / f"metrics-before-{len(list(workdir.glob('metrics-before-*.csv')))}.csv")
    result = lightning_main(args)
    curves = workdir / "metrics.csv"
    join_csv([*sorted(workdir.glob("metrics-before-*.csv")), logged], curves)
    if keep is not None and seed == 0 and result.best_ckpt:
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.best_ckpt, evidence.kept_checkpoint(keep, arm))
        if curves.is_file():
            shutil.copyfile(curves, evidence.kept_checkpoint(keep, arm).with_suffix(".metrics.csv"))
    if keep_as is not None and result.best_ckpt:
        keep_as.parent.mkdir(parents=True, exist_ok=True)
        if curves.is_file():
            shutil.copyfile(curves, keep_as.with_suffix(".metrics.csv"))
        partial = keep_as.with_name(f".{keep_as.name}.tmp")
        shutil.copyfile(result.best_ckpt, partial)
        partial.replace(keep_as)  # an arm never starts from a half-copied checkpoint
    shutil.rmtree(workdir, ignore_errors=True)
    return {k: float(v) for k, v in result.test_metrics.items()}, result.best_val, result.test_samples


def zoo_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="distillzoo zoo", description="the distillzoo model zoo")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the entries")
    show = sub.add_parser("show", help="print an entry's metafile")
    show.add_argument("name")
    check = sub.add_parser("verify", help="check sha256 of one or all entries' weights")
    check.add_argument("name", nargs="?")
    exp = sub.add_parser("export", help="turn a Lightning .ckpt into student safetensors + an entry")
    exp.add_argument("ckpt")
    exp.add_argument("--name", required=True)
    exp.add_argument("--meta", help="YAML with entry fields (method, task, paper, data, recipe, ...)")
    exp.add_argument("--weights-dir", type=Path)
    exp.add_argument("--entries-dir", type=Path)
    exp.add_argument("--overwrite", action="store_true")
    exp.add_argument("--part", help="for a checkpoint of several students (e.g. cnn, vit): the one to export")
    crd = sub.add_parser("cards", help="regenerate MODEL_CARDS.md from the metafiles")
    crd.add_argument("--output", type=Path)
    ev = sub.add_parser("evidence", help="run an entry's arms over seeds and write the result rows")
    ev.add_argument("name")
    ev.add_argument("--seeds", type=int, default=3)
    ev.add_argument("--arms", nargs="+", help="only these arms (by name); other rows are kept")
    ev.add_argument("--jobs", type=int, default=1, help="fits run at once, in spawned processes (default 1)")
    ev.add_argument("--keep", type=Path, help="copy each arm's seed-0 best checkpoint here, as <arm slug>.ckpt")
    ev.add_argument("--fresh", action="store_true", help="rerun the arms' recorded runs too (after a code change)")
    ev.add_argument("--rows-only", action="store_true", help="fit nothing: rebuild the rows from the recorded runs")
    pub = sub.add_parser("publish", help="rebuild an entry from its publish block: evidence, export, figures, cards")
    pub.add_argument("name")
    pub.add_argument("--jobs", type=int, default=1, help="evidence fits run at once (default 1)")
    pub.add_argument("--keep", type=Path, help="kept seed-0 checkpoints (default runs/publish/NAME)")
    pub.add_argument("--fresh", action="store_true", help="rerun the recorded evidence runs too")
    opts = parser.parse_args(argv)

    if opts.command == "list":
        for name in zoo.list():
            meta = zoo.get(name).meta
            print(f"{name:40s} {meta.method:12s} {meta.task}")
        for name in registry.list_pending():  # evidence still running: nothing to load yet
            meta = registry.get(name, pending=True).meta
            print(f"{name:40s} {meta.method:12s} {meta.task} [evidence in progress: zoo publish {name}]")
    elif opts.command == "show":
        print(yaml.safe_dump(zoo.get(opts.name).raw, sort_keys=False, allow_unicode=True), end="")
    elif opts.command == "verify":
        failed = 0
        for name in [opts.name] if opts.name else zoo.list():
            try:  # one bad entry is reported and the others are still checked
                path = store.check_entry(registry.get(name))
                print(f"ok      {name}  {path}")
            except (ValueError, KeyError, TypeError, OSError, ImportError) as err:
                failed += 1
                print(f"FAILED  {name}: {message_of(err)}")
        return 1 if failed else 0
    elif opts.command == "export":
        meta = read_yaml_mapping(Path(opts.meta).expanduser(), "--meta file") if opts.meta else None
        path = export.export(
            opts.ckpt, opts.name, meta, opts.weights_dir, opts.entries_dir, opts.overwrite, part=opts.part
        )
        print(f"exported {opts.name}: {path}")
    elif opts.command == "cards":
        print(f"wrote {cards.write(opts.output)}")
    elif opts.command == "evidence":
        command = f"python cli.py zoo evidence {opts.name} --seeds {opts.seeds}"
        command += f" --jobs {opts.jobs}" if opts.jobs > 1 else ""
        results = evidence.run(
            opts.name, opts.seeds, evidence_fit, opts.arms, opts.jobs, opts.keep, command, opts.fresh, opts.rows_only
        )
        failed = [g for g in results.get("gates", []) if g["status"] == "fail"]
        for gate in failed:
            print(f"error: sanity gate {gate['gate']!r} failed for {opts.name}: {gate['detail']}", file=sys.stderr)
        return 1 if failed else 0
    elif opts.command == "publish":
        plan = registry.get(opts.name, pending=True).meta.publish or schema.Publish()
        keep = opts.keep or publish.keep_dir(opts.name)
        if plan.script is not None:  # the entry is computed from other entries by a project script
            run_scripts(opts.name, [plan.script], keep)
        else:
            command = f"python cli.py zoo publish {opts.name}" + (f" --jobs {opts.jobs}" if opts.jobs > 1 else "")
            path = publish.publish(opts.name, evidence_fit, build_data, opts.jobs, opts.keep, opts.fresh, command)
            print(f"published {opts.name}: {path} (evidence over {plan.seeds} seeds where it has arms)")
        run_scripts(opts.name, plan.figures, keep)
        print(f"wrote {cards.write()}")
    return 0


def build_data(fit: schema.Fit) -> LightningDataModule:
    """The datamodule of a fit's configs and overrides, composed exactly as the fit would compose it."""
    return lightning_main([*(f"--config={c}" for c in fit.config), *fit.args], run=False).datamodule


def run_scripts(name: str, commands: list[list[str]], keep: Path) -> None:
    """Run the project scripts a publish block names (each ``scripts/*.py`` with its arguments, checked by the
    schema: a metafile never names a program of its own); ``{keep}`` and ``{name}`` are filled in."""
    import subprocess

    for command in commands:
        args = [a.replace("{keep}", str(keep)).replace("{name}", name) for a in command[1:]]
        print(f"[publish] python {command[0]} {' '.join(args)}", flush=True)
        subprocess.run(
            [sys.executable, str(registry.REPO_ROOT / command[0]), *args], check=True, cwd=registry.REPO_ROOT
        )


def take_data_root(args: list[str]) -> list[str]:
    """Remove ``--data-root DIR`` (or ``--data-root=DIR``, any position) from ``args`` and export it as
    ``$DISTILLZOO_DATA``, where recipes' ``data:NAME`` roots resolve; fits spawned by ``zoo evidence --jobs``
    inherit it."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--data-root" or arg.startswith("--data-root="):
            value = arg.split("=", 1)[1] if "=" in arg else (args[i + 1] if i + 1 < len(args) else "")
            if not value or not Path(value).expanduser().is_dir():
                raise FileNotFoundError(f"--data-root {value!r} is not a folder")
            os.environ[DATA_ENV] = str(Path(value).expanduser().resolve())
            i += 1 if "=" in arg else 2
            continue
        out.append(arg)
        i += 1
    return out


def main(args: list[str] | None = None) -> Any:
    """Run the CLI in-process: returns the LightningCLI for Lightning commands, an exit code for ``zoo``.
    ``--data-root DIR`` anywhere sets the folder ``data:NAME`` roots live in (``$DISTILLZOO_DATA``)."""
    args = take_data_root(sys.argv[1:] if args is None else list(args))
    quiet()
    if args and args[0] == "zoo":
        return zoo_main(args[1:])
    return lightning_main(args)


NOISE = re.compile(r"^(- )?(Expected a <class 'NoneType'>|Given value|Subtypes:|Errors:|Does not validate against)")
PARSER_KEY = re.compile(r'^(- )?Parser key "(?P<key>[^"]+)":$')
CLASS_PATH = re.compile(r"^(- )?Problem with given class_path '(?P<cls>[^']+)':$")


def root_cause(message: str) -> str:
    """The innermost line of a jsonargparse error (it nests a constructor's message inside every Union it
    tried), prefixed by the option it is about (``--model.init_args.student.init_args.in_channels``) and the
    class whose argument it is, so the user reads the actual problem instead of the Namespace dump."""
    context: list[tuple[int, str, str]] = []  # (indent, "key" | "class", text) of the enclosing headers
    cause, where, given = None, [], None
    for raw in message.splitlines():
        line = raw.strip()
        if not line:
            continue
        indent = len(raw) - len(raw.lstrip())
        while context and context[-1][0] >= indent:
            context.pop()
        if match := PARSER_KEY.match(line):
            context.append((indent, "key", match["key"]))
        elif match := CLASS_PATH.match(line):
            context.append((indent, "class", match["cls"]))
        elif line.startswith("Given value:") and cause is not None and given is None:
            given = line.removeprefix("Given value:").strip()
        elif not NOISE.match(line):
            cause, where, given = line.removeprefix("- "), list(context), None
    if cause is None:
        return message.strip().splitlines()[-1] if message.strip() else message
    keys = [text if kind == "key" else "init_args" for _, kind, text in where]
    while keys and keys[-1] == "init_args":  # a class's own error, not one of its arguments
        keys.pop()
    classes = [text for _, kind, text in where if kind == "class"]
    if cause.startswith("Expected a") and "Got value" not in cause and given is not None:
        cause += f"; got {given}"  # a type mismatch jsonargparse reports without the value
    if len(cause) > 1 and cause[0] == cause[-1] == '"':
        cause = cause[1:-1]  # a KeyError's message, quoted by str()
    prefix = f"--{'.'.join(keys)}" if keys else ""
    prefix += f" ({classes[-1]})" if classes else ""
    return f"{prefix}: {cause}" if prefix else cause


def message_of(err: BaseException) -> str:
    """An exception's message as written (``str`` of a KeyError is its repr, in quotes)."""
    return str(err.args[0]) if isinstance(err, KeyError) and len(err.args) == 1 else str(err)


# errors a user can act on from their message alone: printed as ``error: <message>``, without a traceback
USER_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    OSError,
    ImportError,
    FloatingPointError,
    pickle.UnpicklingError,
    MisconfigurationException,
)


def console_main() -> None:
    """The ``distillzoo`` / ``python cli.py`` entry point: a bad option or value ends with ``error: <the
    problem>`` as the last line (after jsonargparse's full report above it)."""
    try:
        result = main()
    except argparse.ArgumentError as err:  # jsonargparse's report in full, then its root cause last
        print(f"{err}\nerror: {root_cause(str(err))}", file=sys.stderr)
        sys.exit(2)
    except USER_ERRORS as err:
        print(f"error: {root_cause(message_of(err))}", file=sys.stderr)
        sys.exit(2)
    if isinstance(result, int):
        sys.exit(result)


if __name__ == "__main__":
    console_main()
