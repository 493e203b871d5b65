"""``data:NAME`` roots: recipes and metafiles name a dataset folder inside ``$DISTILLZOO_DATA`` (set by
``cli.py --data-root``), never a path of one machine's layout."""

import re
from pathlib import Path

import pytest

import cli
from datamodules.base import resolve_root
from datamodules.graphs import PlanetoidDataModule
from zoo import registry


def test_data_roots_resolve_inside_the_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILLZOO_DATA", str(tmp_path))
    assert resolve_root("data:tu") == str(tmp_path / "tu")
    assert resolve_root("/elsewhere/tu") == "/elsewhere/tu" and resolve_root(None) is None
    for bad in ("data:../etc", "data:/etc", "data:"):
        with pytest.raises(ValueError, match="expected data:NAME with NAME a folder inside"):
            resolve_root(bad)


def test_an_unset_data_folder_is_named_when_the_root_is_read_not_when_the_recipe_builds(monkeypatch):
    monkeypatch.delenv("DISTILLZOO_DATA", raising=False)
    dm = PlanetoidDataModule(root="data:planetoid")  # builds: recipes compose on a machine without the data
    with pytest.raises(ValueError, match=r"'data:planetoid' lies in the data folder, but \$DISTILLZOO_DATA is not set"):
        dm.setup()


def test_cli_data_root_flag_sets_the_folder_and_refuses_a_missing_one(monkeypatch, tmp_path):
    monkeypatch.delenv("DISTILLZOO_DATA", raising=False)
    rest = cli.take_data_root(["fit", "--data-root", str(tmp_path), "--config=x.yaml"])
    assert rest == ["fit", "--config=x.yaml"] and resolve_root("data:cora") == str(tmp_path.resolve() / "cora")
    with pytest.raises(FileNotFoundError, match="--data-root '/no/such/dir' is not a folder"):
        cli.take_data_root(["--data-root=/no/such/dir"])


def test_no_published_metafile_or_recipe_holds_a_machine_path():
    texts = [*registry.ENTRIES_DIR.glob("*.yaml"), *(registry.ENTRIES_DIR.parent / "pending").glob("*.yaml")]
    texts += [*(registry.REPO_ROOT / "recipes").rglob("*.yaml")]
    offenders = [str(p) for p in texts if re.search(r"\.\./shared|/work/|/home/", Path(p).read_text())]
    assert not offenders, f"machine-specific paths in {offenders}: use data:NAME roots"
