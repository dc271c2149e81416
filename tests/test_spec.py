"""Spec validation: every problem is a SpecError issue ``FILE:LINE FIELD.PATH: message`` with
the right line, all problems at once, ``--set`` overrides, paths relative to the spec file."""

from __future__ import annotations

import copy
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import write_multiview
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmfuse.data import load_data
from mmfuse.errors import SpecError, SpecIssue
from mmfuse.graph import build_graph
from mmfuse.plugins import get_plugins
from mmfuse.spec import ViewSpec, load_spec, parse_yaml

VIEW_KEYS = ", ".join(ViewSpec.model_fields)


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def spec_error(fn, *args) -> SpecError:
    with pytest.raises(SpecError) as info:
        fn(*args)
    assert isinstance(info.value, SpecError)
    return info.value


def rendered(err: SpecError, path: Path | None = None) -> list[str]:
    """The issues as text, with the spec's folder stripped so lines read ``spec.yaml:N ...``."""
    lines = [str(i) for i in err.issues]
    prefix = "" if path is None else str(path.parent) + os.sep
    return [s[len(prefix):] if prefix and s.startswith(prefix) else s for s in lines]


def graph_errors(path: Path) -> list[str]:
    spec = load_spec(path)
    return rendered(spec_error(build_graph, spec, get_plugins()), path)


# Two entities, one matrix view: used (and broken) by many tests below.
MATRIX = textwrap.dedent("""\
    name: t
    entities:
      a: {size: 3}
      b: {size: 4}
    views:
      v:
        rows: a
        cols: b
        source: {reader: npy, path: x.npy}
    """)


# --------------------------------------------------------------------------- rendering


def test_issue_renders_file_line_field_message():
    assert str(SpecIssue(("views", "v", 0, "x"), "bad", "s.yaml", 7)) == "s.yaml:7 views.v.0.x: bad"
    assert str(SpecIssue(("name",), "bad", "s.yaml")) == "s.yaml name: bad"
    assert str(SpecIssue((), "bad")) == "<spec> <spec>: bad"
    err = SpecError([SpecIssue(("a",), "x", "f", 1), SpecIssue(("b",), "y", "f", 2)])
    assert err.exit_code == 3
    assert str(err) == "f:1 a: x\nf:2 b: y"


def test_valid_spec_loads_with_defaults(tmp_path):
    path = write(tmp_path, MATRIX)
    spec = load_spec(path)
    assert spec.name == "t"
    assert spec.entities["b"].size == 4
    v = spec.views["v"]
    assert (v.rows, v.cols, v.likelihood.type, v.columns, v.encoder.type) == (
        "a", "b", "gaussian", "autoencoder", "auto")
    assert spec.train.epochs == 50
    assert v.source.path == (tmp_path / "x.npy").resolve()


# --------------------------------------------------------------------------- unknown keys


def test_unknown_key_has_its_line_and_lists_known_keys(tmp_path):
    path = write(tmp_path, MATRIX + "    likelihod: gaussian\n")
    err = spec_error(load_spec, path)
    assert rendered(err, path) == [
        "spec.yaml:10 views.v.likelihod: unknown key; did you mean 'likelihood'? "
        f"known: {VIEW_KEYS}"
    ]
    assert err.issues[0].line == 10
    assert err.issues[0].loc == ("views", "v", "likelihod")


def test_unknown_key_in_flow_mapping_and_at_top_level(tmp_path):
    text = MATRIX.replace("path: x.npy}", "path: x.npy, bogus: 1}") + "colour: red\n"
    path = write(tmp_path, text)
    assert rendered(spec_error(load_spec, path), path) == [
        "spec.yaml:9 views.v.source.bogus: unknown key; known: reader, path, params",
        "spec.yaml:10 colour: unknown key; known: name, seed, base_dir, dataset, entities, "
        "views, model, train, evaluate",
    ]


def test_unknown_key_inside_entity_lists_entity_keys(tmp_path):
    path = write(tmp_path, MATRIX.replace("a: {size: 3}", "a:\n    size: 3\n    colour: 1"))
    assert rendered(spec_error(load_spec, path), path) == [
        "spec.yaml:5 entities.a.colour: unknown key; known: ids, size"
    ]


# --------------------------------------------------------------------------- values


def test_bad_value_points_at_its_line(tmp_path):
    path = write(tmp_path, MATRIX + "train:\n  batch_size: 8\n  epochs: 0\n")
    assert rendered(spec_error(load_spec, path), path) == [
        "spec.yaml:12 train.epochs: Input should be greater than or equal to 1"
    ]


def test_bad_list_item_points_at_the_item(tmp_path):
    path = write(tmp_path, MATRIX + "model:\n  fusion_hidden:\n    - 8\n    - -1\n")
    err = spec_error(load_spec, path)
    assert rendered(err, path) == [
        "spec.yaml:13 model.fusion_hidden.1: Input should be greater than 0"
    ]


def test_missing_field_points_at_its_parent(tmp_path):
    text = MATRIX.replace("    source: {reader: npy, path: x.npy}\n", "")
    path = write(tmp_path, text)
    assert rendered(spec_error(load_spec, path), path) == [
        "spec.yaml:6 views.v.source: Field required"
    ]


def test_model_level_rules_point_at_the_model(tmp_path):
    path = write(tmp_path, MATRIX.replace("    cols: b\n", "    cols: b\n    features: true\n"))
    assert rendered(spec_error(load_spec, path), path) == [
        "spec.yaml:6 views.v: a feature view (`features: true`) has no `cols`: its columns are "
        "attributes of the rows; drop one of the two",
    ]
    both = "    cols: b\n    tensor: {shape: [2]}\n"
    path = write(tmp_path, MATRIX.replace("    cols: b\n", both))
    assert rendered(spec_error(load_spec, path), path) == [
        "spec.yaml:6 views.v: a view has either `cols` (a matrix view) or `tensor` (a tensor view)",
    ]


def test_empty_and_non_mapping_specs(tmp_path):
    path = write(tmp_path, "")
    assert rendered(spec_error(load_spec, path), path) == [
        "spec.yaml name: Field required",
        "spec.yaml entities: Field required",
        "spec.yaml views: Field required",
    ]
    path = write(tmp_path, "- a\n- b\n")
    assert rendered(spec_error(load_spec, path), path) == [
        "spec.yaml <spec>: a spec is a YAML mapping (name:, entities:, views:, ...)"
    ]


def test_unreadable_spec_file_is_a_spec_error(tmp_path):
    err = spec_error(load_spec, tmp_path / "nope.yaml")
    assert len(err.issues) == 1
    assert err.issues[0].file == str(tmp_path / "nope.yaml")
    assert "cannot read spec" in err.issues[0].message


# --------------------------------------------------------------------------- references


def test_unknown_entity_lists_known_entities(tmp_path):
    text = MATRIX.replace("cols: b", "cols: c") + "train: {primary: zz}\n"
    path = write(tmp_path, text)
    assert graph_errors(path) == [
        "spec.yaml:8 views.v.cols: unknown entity 'c'; known entities: a, b",
        "spec.yaml:10 train.primary: unknown entity or view 'zz'; known entities: a, b; "
        "known views: v",
    ]


def test_unknown_entity_in_evaluate_target(tmp_path):
    text = MATRIX + textwrap.dedent("""\
        evaluate:
          targets:
            y: {entity: nobody, path: y.npy, task: regression, probe: ridge}
        """)
    path = write(tmp_path, text)
    assert graph_errors(path) == [
        "spec.yaml:12 evaluate.targets.y.entity: unknown entity 'nobody'; known entities: a, b"
    ]


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "kind", "name"),
    [
        ("reader: npy", "reader: npyy", 9, "views.v.source.reader", "readers", "npyy"),
        ("cols: b\n", "cols: b\n    encoder: {type: densee}\n", 9, "views.v.encoder.type",
         "encoders", "densee"),
        ("cols: b\n", "cols: b\n    col_encoder: {type: nope}\n", 9, "views.v.col_encoder.type",
         "encoders", "nope"),
        ("cols: b\n", "cols: b\n    likelihood: gausian\n", 9, "views.v.likelihood",
         "likelihoods", "gausian"),
    ],
)
def test_unknown_plugin_name_lists_known_names(tmp_path, old, new, line, field, kind, name):
    path = write(tmp_path, MATRIX.replace(old, new))
    registry = get_plugins().registry(kind)
    [issue] = graph_errors(path)
    assert issue == f"spec.yaml:{line} {field}: {registry.unknown_message(name)}"
    for known in registry.names():
        assert known in issue
    assert len(registry.names()) >= 2


def test_unknown_plugin_message_suggests_the_closest_name():
    encoders = get_plugins().encoders
    msg = encoders.unknown_message("densee")
    assert msg == (f"unknown encoder 'densee'; known: {', '.join(encoders.names())} "
                   "(did you mean 'dense'?)")
    assert "did you mean" not in encoders.unknown_message("zzzzzz")


def test_unknown_callback_and_dataset(tmp_path):
    text = MATRIX + "train:\n  callbacks:\n    - nope\ndataset: {name: goodread, root: d}\n"
    path = write(tmp_path, text)
    plugins = get_plugins()
    assert graph_errors(path) == [
        f"spec.yaml:13 dataset.name: {plugins.datasets.unknown_message('goodread')}",
        f"spec.yaml:12 train.callbacks.0: {plugins.callbacks.unknown_message('nope')}",
    ]


def test_entity_no_view_touches(tmp_path):
    path = write(tmp_path, MATRIX.replace("b: {size: 4}", "b: {size: 4}\n  c: {size: 2}"))
    assert graph_errors(path) == [
        "spec.yaml:5 entities.c: no view touches this entity; remove it or add a view"
    ]


def test_decode_from_only_on_tensor_views(tmp_path):
    path = write(tmp_path, MATRIX + "    decode_from: fused\n")
    assert graph_errors(path) == ["spec.yaml:10 views.v.decode_from: only tensor views decode"]


# --------------------------------------------------------------------------- all at once


def test_all_validation_problems_reported_at_once(tmp_path):
    text = MATRIX.replace("a: {size: 3}", "a: {size: 0}") + "    weight: -1\ntrain: {epochs: x}\n"
    path = write(tmp_path, text)
    assert rendered(spec_error(load_spec, path), path) == [
        "spec.yaml:3 entities.a.size: Input should be greater than 0",
        "spec.yaml:10 views.v.weight: Input should be greater than or equal to 0",
        "spec.yaml:11 train.epochs: Input should be a valid integer, unable to parse string as an "
        "integer",
    ]


def test_all_reference_problems_reported_at_once(tmp_path):
    text = (MATRIX.replace("rows: a", "rows: x").replace("reader: npy", "reader: nop")
            + "    likelihood: nope\n")
    path = write(tmp_path, text)
    issues = graph_errors(path)
    assert [i.split(" ", 2)[:2] for i in issues] == [
        ["spec.yaml:7", "views.v.rows:"],
        ["spec.yaml:9", "views.v.source.reader:"],
        ["spec.yaml:10", "views.v.likelihood:"],
    ]


# --------------------------------------------------------------------------- YAML syntax


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("name: t\nentities:\n  a: 1\n   b: 2\n", 4, "mapping values are not allowed here"),
        ("name: t\n\tseed: 0\n", 2, "found character '\\t' that cannot start any token"),
        ("name: t\nentities: {a: {size: 3}}\n- x\n", 3, "expected <block end>, but found '-'"),
        ("name: t\nx: *nope\n", 2, "found undefined alias 'nope'"),
        ("name: t\n---\nname: u\n", 2, "but found another document"),
    ],
)
def test_malformed_yaml_names_the_line(tmp_path, text, line, problem):
    path = write(tmp_path, text)
    err = spec_error(load_spec, path)
    [message] = rendered(err, path)
    assert message.startswith(f"spec.yaml:{line} <spec>: malformed YAML: {problem}")
    assert err.issues[0].line == line


def test_malformed_yaml_names_where_the_broken_construct_started(tmp_path):
    path = write(tmp_path, 'name: t\nseed: 0\nentities: "open\n\n\n')
    [message] = rendered(spec_error(load_spec, path), path)
    assert "while scanning a quoted scalar at line 3" in message


def test_duplicate_key_points_at_the_second_one(tmp_path):
    path = write(tmp_path, MATRIX.replace("    cols: b\n", "    cols: b\n    rows: b\n"))
    err = spec_error(load_spec, path)
    assert rendered(err, path) == ["spec.yaml:9 views.v.rows: duplicate key"]


def test_every_duplicate_key_reported(tmp_path):
    text = MATRIX.replace("path: x.npy}", "path: x.npy, reader: npz}") + "name: again\n"
    path = write(tmp_path, text)
    assert rendered(spec_error(load_spec, path), path) == [
        "spec.yaml:9 views.v.source.reader: duplicate key",
        "spec.yaml:10 name: duplicate key",
    ]


def test_duplicate_key_reported_with_other_problems(tmp_path):
    path = write(tmp_path, MATRIX + "name: again\nbogus: 1\n")
    issues = rendered(spec_error(load_spec, path), path)
    assert "spec.yaml:10 name: duplicate key" in issues
    assert any(i.startswith("spec.yaml:11 bogus: unknown key") for i in issues)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("name: !foo t\n", 1),
        ("name: t\n? [a, b]\n: 1\n", 2),
        ("name: t\nx: &a [*a]\n", 2),
    ],
    ids=["unknown-tag", "sequence-key", "recursive-alias"],
)
def test_unconstructible_yaml_is_a_spec_error(tmp_path, text, line):
    path = write(tmp_path, text)
    err = spec_error(load_spec, path)
    assert err.issues[0].line == line


# --------------------------------------------------------------------------- --set


def test_set_overrides_change_values(tmp_path):
    path = write(tmp_path, MATRIX + "train: {epochs: 7}\n")
    assert load_spec(path).train.epochs == 7
    spec = load_spec(path, ["train.epochs=3", "model.terms.factor=false",
                            "model.fusion_hidden=[8, 4]", "name=a=b", "views.v.weight=0.5"])
    assert spec.train.epochs == 3
    assert spec.model.terms.factor is False
    assert spec.model.fusion_hidden == [8, 4]
    assert spec.name == "a=b"
    assert spec.views["v"].weight == 0.5
    assert load_spec(path, ["train.epochs=3", "train.epochs=4"]).train.epochs == 4


def test_set_errors_point_at_set(tmp_path):
    path = write(tmp_path, MATRIX + "train: {epochs: 7}\n")
    err = spec_error(load_spec, path, ["train.epochs=0", "train.bogus=1"])
    assert rendered(err, path) == [
        "--set train.epochs: Input should be greater than or equal to 1",
        "--set train.bogus: unknown key; known: epochs, batch_size, entity_batch, primary, "
        "cell_batch, optimizer, tol, patience, validation, device, precision, compile, "
        "strategy, balance, threads, callbacks",
    ]
    assert all(i.file == "--set" and i.line is None for i in err.issues)


def test_set_and_file_errors_together_each_point_at_their_origin(tmp_path):
    path = write(tmp_path, MATRIX + "    weight: -1\n")
    err = spec_error(load_spec, path, ["train.epochs=0"])
    assert rendered(err, path) == [
        "spec.yaml:10 views.v.weight: Input should be greater than or equal to 0",
        "--set train.epochs: Input should be greater than or equal to 1",
    ]


def test_set_reference_error_points_at_set(tmp_path):
    path = write(tmp_path, MATRIX)
    spec = load_spec(path, ["views.v.rows=nobody"])
    err = spec_error(build_graph, spec, get_plugins())
    assert rendered(err) == ["--set views.v.rows: unknown entity 'nobody'; known entities: a, b"]


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("train.epochs", "--set <spec>: --set 'train.epochs': expected key.path=value"),
        ("=3", "--set <spec>: --set '=3': expected key.path=value"),
        ("name.x=1", "--set name: --set: not a mapping"),
    ],
)
def test_malformed_set(tmp_path, assignment, expected):
    path = write(tmp_path, MATRIX)
    assert rendered(spec_error(load_spec, path, [assignment])) == [expected]


def test_set_of_a_whole_section_points_at_set(tmp_path):
    path = write(tmp_path, MATRIX + "train:\n  epochs: 7\n")
    err = spec_error(load_spec, path, ["train={epochs: 0}"])
    assert rendered(err, path) == ["--set train.epochs: Input should be greater than or equal to 1"]


# --------------------------------------------------------------------------- paths


def test_relative_paths_resolve_against_the_spec_folder(tmp_path, monkeypatch):
    folder = tmp_path / "specs" / "sub"
    folder.mkdir(parents=True)
    text = MATRIX.replace("a: {size: 3}", "a: {ids: ../ids.txt}") + textwrap.dedent("""\
        evaluate:
          targets:
            y: {entity: a, path: data/y.npy, task: regression, probe: ridge}
        """)
    text = text.replace("path: x.npy", f"path: {tmp_path / 'abs.npy'}")
    path = write(folder, text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for spec_path in (path, os.path.relpath(path, elsewhere)):
        spec = load_spec(spec_path)
        assert spec.entities["a"].ids == (tmp_path / "specs" / "ids.txt").resolve()
        assert spec.evaluate.targets["y"].path == (folder / "data" / "y.npy").resolve()
        assert spec.views["v"].source.path == tmp_path / "abs.npy"


def test_data_loads_from_another_working_directory(multiview, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load_spec(os.path.relpath(multiview, tmp_path))
    data = load_data(spec, get_plugins())
    assert data.sizes == {"book": 48, "user": 32, "word": 24}
    assert data.ids["book"][:2] == ["b0", "b1"]
    assert data.shapes() == {"cover": [48, 3, 16, 16], "text": [48, 24], "ratings": [32, 48],
                             "cooc": [24, 24]}


# --------------------------------------------------------------------------- data vs spec

DATA = textwrap.dedent("""\
    name: d
    entities:
      a: {ids: a_ids.txt}
      b: {size: 3}
    views:
      m:
        rows: a
        cols: b
        source: {reader: npy, path: m.npy}
      t:
        rows: a
        tensor: {shape: [2, 2]}
        source: {reader: npy, path: t.npy}
    """)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    np.save(tmp_path / "m.npy", np.arange(12, dtype=np.float32).reshape(4, 3))
    np.save(tmp_path / "t.npy", np.zeros((4, 2, 2), dtype=np.float32))
    (tmp_path / "a_ids.txt").write_text("w\nx\ny\nz\n")
    (tmp_path / "rev_ids.txt").write_text("z\ny\nx\nw\n")
    return tmp_path


def with_params(params: str) -> str:
    """DATA with ``params`` on the source of view m (line 9)."""
    return DATA.replace("path: m.npy}", f"path: m.npy, params: {params}}}")


def data_errors(path: Path, overrides=()) -> list[str]:
    spec = load_spec(path, list(overrides))
    build_graph(spec, get_plugins())
    return rendered(spec_error(load_data, spec, get_plugins()), path)


def test_data_spec_loads(data_dir):
    path = write(data_dir, DATA)
    data = load_data(load_spec(path), get_plugins())
    assert data.sizes == {"a": 4, "b": 3}
    assert data.ids["a"] == ["w", "x", "y", "z"]
    assert data.ids["b"] == ["0", "1", "2"]
    assert data.shapes() == {"m": [4, 3], "t": [4, 2, 2]}


def test_entity_without_ids_or_size_takes_its_size_from_the_data(data_dir):
    path = write(data_dir, DATA.replace("b: {size: 3}", "b: {}"))
    data = load_data(load_spec(path), get_plugins())
    assert data.sizes["b"] == 3
    assert data.ids["b"] == ["0", "1", "2"]


def test_wrong_tensor_shape(data_dir):
    path = write(data_dir, DATA.replace("shape: [2, 2]", "shape: [2, 3]"))
    assert data_errors(path) == [
        "spec.yaml:12 views.t.tensor.shape: t.npy has shape [4, 2, 2]; expected [n, 2, 3]"
    ]


def test_tensor_rank_mismatch(data_dir):
    path = write(data_dir, DATA.replace("shape: [2, 2]", "shape: [4]"))
    assert data_errors(path) == [
        "spec.yaml:12 views.t.tensor.shape: t.npy has shape [4, 2, 2]; expected [n, 4]"
    ]


def test_matrix_size_differs_from_entity_size(data_dir):
    path = write(data_dir, DATA.replace("b: {size: 3}", "b: {size: 5}"))
    assert data_errors(path) == [
        "spec.yaml:8 views.m.cols: m.npy has 3 cols but entity 'b' has 5 instances"]


def test_matrix_rows_differ_from_ids_file(data_dir):
    (data_dir / "a_ids.txt").write_text("w\nx\ny\n")
    path = write(data_dir, DATA)
    assert data_errors(path) == [
        "spec.yaml:7 views.m.rows: m.npy has 4 rows but entity 'a' has 3 instances",
        "spec.yaml:11 views.t.rows: t.npy has 4 rows but entity 'a' has 3 instances",
    ]


def test_matrix_view_needs_2d_data(data_dir):
    path = write(data_dir, DATA.replace("path: m.npy", "path: t.npy"))
    assert data_errors(path) == [
        "spec.yaml:9 views.m.source: t.npy: a matrix view needs 2-D data; got shape [4, 2, 2]; an "
        "image or other array per row is a tensor view (`tensor: {shape: [2, 2]}`)"
    ]


def test_missing_data_file(data_dir):
    path = write(data_dir, DATA.replace("path: m.npy", "path: nope.npy"))
    assert data_errors(path) == [
        "spec.yaml:9 views.m.source.path: file not found: nope.npy"
    ]


def test_missing_ids_file(data_dir):
    path = write(data_dir, DATA.replace("a_ids.txt", "none.txt"))
    assert data_errors(path) == [
        "spec.yaml:3 entities.a.ids: file not found: none.txt"
    ]


def test_ids_file_problems(data_dir):
    (data_dir / "a_ids.txt").write_text("w\nx\nx\nz\n")
    path = write(data_dir, DATA.replace("{ids: a_ids.txt}", "{ids: a_ids.txt, size: 5}"))
    assert data_errors(path) == [
        "spec.yaml:3 entities.a.ids: a_ids.txt: ids are not unique: 'x' is on lines 2 and 3 "
        "(1 repeated line in all); ids must be unique",
    ]
    (data_dir / "a_ids.txt").write_text("w\nx\ny\nz\n")
    assert data_errors(path) == [
        "spec.yaml:3 entities.a.size: size 5 but the ids file lists 4 ids",
    ]


def test_reader_row_ids_in_entity_order_pass(data_dir):
    path = write(data_dir, with_params("{row_ids: a_ids.txt}"))
    assert load_data(load_spec(path), get_plugins()).sizes["a"] == 4


def test_reader_row_ids_out_of_order(data_dir):
    path = write(data_dir, with_params("{row_ids: rev_ids.txt}"))
    assert data_errors(path) == [
        "spec.yaml:9 views.m.source: rows are not in the order of entity 'a' ids (first "
        "difference at position 0: 'z' where the entity has 'w')"
    ]


def test_reader_row_ids_file_missing(data_dir):
    path = write(data_dir, with_params("{row_ids: gone.txt}"))
    [issue] = data_errors(path)
    assert issue.startswith("spec.yaml:9 views.m.source: reader 'npy' cannot read m.npy: ")
    assert "gone.txt" in issue


def test_missing_forbid_rejects_nan(data_dir):
    m = np.arange(12, dtype=np.float32).reshape(4, 3)
    m[1, 2] = np.nan
    np.save(data_dir / "m.npy", m)
    path = write(data_dir, DATA.replace("    cols: b\n", "    cols: b\n    missing: forbid\n"))
    assert data_errors(path) == [
        "spec.yaml:9 views.m.missing: m.npy has 1 NaN cell, and `missing: forbid` says no "
        "cell may be missing; fill them in, or drop `missing: forbid` (NaN cells are then "
        "missing)"]
    path = write(data_dir, DATA)
    assert load_data(load_spec(path), get_plugins()).views["m"].has_nan()


def test_all_data_problems_reported_at_once(data_dir):
    text = DATA.replace("path: m.npy", "path: nope.npy").replace("shape: [2, 2]", "shape: [3, 2]")
    path = write(data_dir, text)
    issues = data_errors(path)
    assert [i.split(" ", 2)[:2] for i in issues] == [
        ["spec.yaml:9", "views.m.source.path:"],
        ["spec.yaml:12", "views.t.tensor.shape:"],
    ]


def test_data_error_in_an_overridden_field_points_at_set(data_dir):
    path = write(data_dir, DATA)
    assert data_errors(path, ["views.t.tensor.shape=[9]"]) == [
        "--set views.t.tensor.shape: t.npy has shape [4, 2, 2]; expected [n, 9]"
    ]


def test_npy_reader_on_an_npz_file_is_a_spec_error(data_dir):
    np.savez(data_dir / "m.npz", m=np.zeros((4, 3)))
    path = write(data_dir, DATA.replace("path: m.npy", "path: m.npz"))
    [issue] = data_errors(path)
    assert issue.startswith("spec.yaml:9 views.m.source")


def test_npz_reader_on_an_npy_file_is_a_spec_error(data_dir):
    path = write(data_dir, DATA.replace("{reader: npy, path: m.npy}", "{reader: npz, path: m.npy}"))
    [issue] = data_errors(path)
    assert issue.startswith("spec.yaml:9 views.m.source: reader 'npz'")


def test_reader_param_of_wrong_type_is_a_spec_error(data_dir):
    path = write(data_dir, with_params("{row_ids: 5}"))
    [issue] = data_errors(path)
    assert issue.startswith("spec.yaml:9 views.m.source.params.row_ids: reader 'npy': ")


# --------------------------------------------------------------------------- property


@pytest.fixture(scope="module")
def base_spec(tmp_path_factory) -> tuple[Path, dict]:
    path = write_multiview(tmp_path_factory.mktemp("prop"))
    return path, yaml.safe_load(path.read_text())


NAMES = ["book", "user", "word", "npy", "npz", "dense", "conv", "auto", "gaussian", "cover",
         "text", "ratings", "mmeda1", "cmf", "sketch", "fused", "label.npy", "book_ids.txt"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 100), st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet="abz_-. [{:#'\"", max_size=8), st.sampled_from(NAMES),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["x", "type", "size", "params", "rows", "shape"]),
                      children, max_size=3),
    max_leaves=6,
)
JUNK_KEYS = st.one_of(st.sampled_from(["junk", "params", "size", "ids", "cols", "tensor"]),
                      st.text(alphabet="abc_1", min_size=1, max_size=5))


def _paths(node, prefix=()):
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_spec_fails_only_with_spec_error(base_spec, data):
    path, base = base_spec
    doc = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        paths = _paths(doc)
        if not paths:
            break
        where = data.draw(st.sampled_from(paths), label="path")
        parent = doc
        for part in where[:-1]:
            parent = parent[part]
        op = data.draw(st.sampled_from(["delete", "replace", "junk"]), label="op")
        if op == "delete":
            del parent[where[-1]]
        elif op == "replace":
            parent[where[-1]] = data.draw(VALUES, label="value")
        elif isinstance(parent[where[-1]], dict):
            parent[where[-1]][data.draw(JUNK_KEYS, label="key")] = data.draw(VALUES, label="junk")
        else:
            parent[where[-1]] = {data.draw(JUNK_KEYS, label="key"): parent[where[-1]]}
    mutant = path.parent / "mutant.yaml"
    mutant.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        spec = load_spec(mutant)
        graph = build_graph(spec, get_plugins())
    except SpecError as exc:
        assert exc.issues, "a SpecError lists at least one issue"
        for issue in exc.issues:
            assert issue.file == str(mutant)
            assert issue.line is None or 1 <= issue.line <= len(mutant.read_text().splitlines())
            assert str(issue).startswith(str(mutant))
    else:
        assert set(spec.entities) == {n for k, n in graph.nodes if k == "entity"}


def test_parse_yaml_records_lines_of_nested_fields():
    data, src = parse_yaml("a:\n  b:\n    - 1\n    - c: 2\n", "f.yaml")
    assert data == {"a": {"b": [1, {"c": 2}]}}
    assert src.lines[("a",)] == 1
    assert src.lines[("a", "b")] == 2
    assert src.lines[("a", "b", 0)] == 3
    assert src.lines[("a", "b", 1, "c")] == 4


@pytest.mark.parametrize(("sets", "field", "problem"), [
    (["train.optimizer.lr=.inf"], "train.optimizer.lr", "finite number"),
    (["views.ratings.weight=.nan"], "views.ratings.weight", "finite number"),
    (["seed=-1"], "seed", "greater than or equal to 0"),
    ([f"seed={2**70}"], "seed", "less than 4294967296"),
    (["evaluate.split.seed=-3"], "evaluate.split.seed", "greater than or equal to 0"),
    (["name=/tmp/elsewhere"], "name", "should match pattern"),
    (["name=../up"], "name", "should match pattern"),
])
def test_values_no_run_could_use_are_spec_errors_at_their_field(multiview, sets, field,
                                                                 problem):
    """Infinite or NaN numbers, seeds numpy, torch and scikit-learn cannot all take, and a
    name that is a path (the run folder would be written there) are refused at the field."""
    err = spec_error(load_spec, multiview, sets)
    assert any(i.field == field and problem in i.message for i in err.issues), [
        str(i) for i in err.issues]
