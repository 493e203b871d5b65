"""The CLI in-process: recipes, strict keys, saved config, zoo commands, loggers, 2-process DDP."""

from __future__ import annotations

import argparse
import sys

import pytest
import torch

import cli
import zoo
from modules.graph_mlp import MLP
from zoo import export

TINY = "recipes/graph_mlp/tiny.yaml"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def test_tiny_recipe_fast_dev_run_distils_from_a_zoo_teacher(tmp_path):
    result = cli.main(
        ["fit", "--config", TINY, "--trainer.fast_dev_run=true", f"--trainer.default_root_dir={tmp_path}", *QUIET]
    )
    module = result.model
    assert module.mode == "ffg2m" and module.teacher.manifest["source"] == "zoo:gcn-csbm"
    assert module.teacher.manifest["sha256"] == zoo.get("gcn-csbm").sha256
    assert result.trainer.global_step == 1


def test_fit_saves_config_and_logs_csv(tmp_path):
    cli.main(
        [
            "fit",
            "--config",
            TINY,
            "--trainer.max_epochs=2",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            *QUIET,
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    run = tmp_path / "lightning_logs" / "version_0"
    assert "mode: ffg2m" in (run / "config.yaml").read_text()
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert {"train/ce", "train/lfd", "train/hfd", "val/acc"} <= set(header.split(","))


def test_build_without_running_composes_configs_and_overrides_like_fit():
    """``lightning_main(args, run=False)``: the later config and the override win, and nothing is trained."""
    from modules.sparse_ct import GloReDi

    built = cli.lightning_main(
        ["--config=recipes/gloredi/gloredi.yaml", "--config=recipes/gloredi/cpu.yaml", "--data.init_args.views=12"],
        run=False,
    )
    assert isinstance(built.model, GloReDi) and built.model.student.init_args["ngf"] == 16  # from cpu.yaml
    assert built.datamodule.num_phantoms == 1000 and built.datamodule.views == 12
    assert built.trainer.max_epochs == 20 and built.trainer.global_step == 0


def test_unknown_recipe_key_is_refused(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model:\n  class_path: modules.graph_mlp.FFG2M\n  init_args:\n    mode: ce\n    lambda_: 0.3\n")
    # jsonargparse raises ArgumentError (or a ValueError wrapping it, by the path it took); console_main
    # turns either into "error: <root cause>"
    with pytest.raises((ValueError, argparse.ArgumentError), match="Option 'lambda_' is not accepted"):
        cli.main(["fit", "--config", TINY, "--config", str(recipe), "--trainer.fast_dev_run=true"])


def test_zoo_list_and_show(capsys):
    assert cli.main(["zoo", "list"]) == 0
    assert "gcn-csbm" in capsys.readouterr().out
    assert cli.main(["zoo", "show", "gcn-csbm"]) == 0
    assert "sha256:" in capsys.readouterr().out


def test_wandb_logger_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cli.main(
        [
            "fit",
            "--config",
            TINY,
            "--trainer.max_epochs=1",
            f"--trainer.default_root_dir={tmp_path}",
            *QUIET,
            "--trainer.logger=lightning.pytorch.loggers.WandbLogger",
            "--trainer.logger.offline=true",
            f"--trainer.logger.save_dir={tmp_path}",
            "--trainer.logger.project=distillzoo-test",
        ]
    )
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs and list(runs[0].glob("*.wandb"))


def test_ddp_spawn_on_two_cpu_processes_then_load(tmp_path, monkeypatch):
    result = cli.main(
        [
            "fit",
            "--config",
            TINY,
            "--trainer.accelerator=cpu",
            "--trainer.devices=2",
            "--trainer.strategy=ddp_spawn",
            "--trainer.max_epochs=3",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--test_after_fit=false",
            *QUIET,
        ]
    )
    assert result.trainer.world_size == 2
    ckpt = result.trainer.checkpoint_callback.best_model_path
    meta = {"method": "FF-G2M", "task": "node-classification"}
    export.export(ckpt, "ddp-student", meta, tmp_path / "weights", tmp_path / "entries")
    monkeypatch.setenv("DISTILLZOO_ENTRIES", str(tmp_path / "entries"))
    monkeypatch.setenv("DISTILLZOO_WEIGHTS", str(tmp_path / "weights"))
    student = zoo.load("ddp-student")
    assert isinstance(student, MLP)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert torch.equal(state["student.layers.0.weight"], student.layers[0].weight)


def test_fit_output_has_no_advertising_tip_or_intended_warnings(tmp_path, capfd, recwarn):
    """The frozen teacher's eval mode is intended and Lightning's litlogger tip is advertising: neither
    reaches the user; the run's own output (the test table) does."""
    import warnings

    warnings.simplefilter("always")
    cli.main(["fit", "--config=recipes/graph_mlp/tiny.yaml", "--trainer.max_epochs=1",
              f"--trainer.default_root_dir={tmp_path}"])  # fmt: skip
    out, err = capfd.readouterr()
    assert "Tip" not in out + err and "litlogger" not in out + err
    assert not [w for w in recwarn if "eval mode" in str(w.message)]
    assert "test/acc" in out


def test_a_bad_value_ends_with_its_root_cause_and_a_zoo_typo_is_named(capsys, monkeypatch):
    """The last line a user sees is ``error: <the problem>``, not jsonargparse's Namespace dump."""
    monkeypatch.setattr(
        sys, "argv", ["cli.py", "fit", "--config=recipes/graph_mlp/tiny.yaml", "--model.init_args.mode=bogus"]
    )
    with pytest.raises(SystemExit) as exit_:
        cli.console_main()
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: --model.init_args.mode (modules.graph_mlp.FFG2M): Expected a typing.Literal[")
    assert last.endswith("Got value: bogus")
    monkeypatch.setattr(sys, "argv", ["cli.py", "fit", "--config=recipes/graph_mlp/tiny.yaml",
                                      "--model.init_args.init_weights=ZOO:gcn-cora"])  # fmt: skip
    with pytest.raises(SystemExit):
        cli.console_main()
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("did you mean zoo:gcn-cora?")


def test_a_fit_resumed_from_its_checkpoint_continues_the_run_it_was(tmp_path):
    """A fit's checkpoints keep its random state: the global generators (ResumableRandomState, on every CLI
    trainer) and the shuffled loader's own (the datamodule's state), so three epochs in one go and two epochs
    then a resume to three give the same weights (shuffles, random crops and flips every epoch). The same
    resume from a checkpoint without that state, as before, continues as another run."""
    import torch

    def fit(root: str, epochs: int, *extra: str):
        return cli.main([
            "fit", "--config=recipes/cnn_vit/tiny.yaml", "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", f"--trainer.max_epochs={epochs}",
            f"--trainer.default_root_dir={tmp_path / root}",
            "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            f"--trainer.callbacks.dirpath={tmp_path / root}", "--trainer.callbacks.filename=last", *extra,
        ]).model.state_dict()  # fmt: skip

    def same(a: dict, b: dict) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    whole = fit("whole", 3)
    fit("cut", 2)
    cut = tmp_path / "cut" / "last.ckpt"
    assert same(whole, fit("resumed", 3, f"--ckpt_path={cut}"))
    state = torch.load(cut, weights_only=True)  # the state is plain tensors and lists
    assert any("ResumableRandomState" in key for key in state["callbacks"])
    assert len(state["SegmentationDataModule"]["shuffle_generators"]) == 1
    state["callbacks"] = {k: v for k, v in state["callbacks"].items() if "ResumableRandomState" not in k}
    del state["SegmentationDataModule"]
    torch.save(state, tmp_path / "before.ckpt")
    assert not same(whole, fit("before", 3, f"--ckpt_path={tmp_path / 'before.ckpt'}"))
