"""The plugin registry: names, duplicates, default encoders, hook specs, a third-party plugin."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import write_multiview
from typer.testing import CliRunner

from mmfuse import hookimpl, hookspecs
from mmfuse.build import build
from mmfuse.cli import app
from mmfuse.errors import PluginError
from mmfuse.plugin_api import ViewSide
from mmfuse.plugins import KINDS, collect, get_plugins, make_manager
from mmfuse.spec import load_spec

README = Path(__file__).resolve().parents[1] / "README.md"


def plugin(name: str, **hooks) -> types.ModuleType:
    """A throwaway plugin: a module named ``name`` with the given functions as hook impls."""
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, hookimpl(fn))
    return module


def adds(kind_name: str, *names: str):
    def register_hook(register):
        for n in names:
            register.add(n, object())

    register_hook.__name__ = kind_name
    return register_hook


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])





# --------------------------------------------------------------------------- names


def test_builtin_registries():
    plugins = get_plugins()
    assert {"dense", "conv"} <= set(plugins.encoders.names())
    assert {"npy", "npz", "images", "word2vec"} <= set(plugins.readers.names())
    assert {"gaussian", "bernoulli", "poisson"} <= set(plugins.likelihoods.names())
    assert "goodreads" in plugins.datasets
    assert plugins.encoders.entries["conv"].plugin == "encoders"
    assert plugins.readers.entries["npz"].plugin == "readers"
    assert plugins.datasets.entries["goodreads"].plugin == "goodreads"
    assert get_plugins() is plugins  # loaded once per process


def test_same_name_from_two_plugins_names_both():
    alpha = plugin("alpha", mmfuse_register_encoders=adds("mmfuse_register_encoders", "twin"))
    beta = plugin("beta", mmfuse_register_encoders=adds("mmfuse_register_encoders", "twin"))
    with pytest.raises(PluginError) as info:
        collect(make_manager(extra=[alpha, beta]))
    msg = str(info.value)
    assert "encoder 'twin' is registered twice" in msg
    assert "'alpha'" in msg and "'beta'" in msg
    assert info.value.exit_code == 4


def test_same_name_as_a_builtin_names_both_plugins():
    clash = plugin("clash", mmfuse_register_readers=adds("mmfuse_register_readers", "npy"))
    with pytest.raises(PluginError) as info:
        collect(make_manager(extra=[clash]))
    assert "reader 'npy' is registered twice" in str(info.value)
    assert "'readers'" in str(info.value) and "'clash'" in str(info.value)


def test_same_name_in_different_kinds_is_fine():
    p = plugin("kinds", mmfuse_register_encoders=adds("mmfuse_register_encoders", "shared"),
               mmfuse_register_readers=adds("mmfuse_register_readers", "shared"))
    plugins = collect(make_manager(extra=[p]))
    assert plugins.encoders.entries["shared"].plugin == "kinds"
    assert plugins.readers.entries["shared"].plugin == "kinds"


def test_empty_name_is_refused():
    p = plugin("noname", mmfuse_register_likelihoods=adds("mmfuse_register_likelihoods", ""))
    with pytest.raises(PluginError, match="'noname'.*need a name"):
        collect(make_manager(extra=[p]))


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_name_lists_known_names(kind):
    registry = get_plugins().registry(kind)
    with pytest.raises(PluginError) as info:
        registry.get("nope")
    known = ", ".join(registry.names()) or "(none)"
    assert str(info.value) == f"unknown {kind[:-1]} 'nope'; known: {known}"


def test_unknown_name_suggests_a_close_one():
    with pytest.raises(PluginError) as info:
        get_plugins().readers.get("npzz")
    readers = get_plugins().readers
    assert str(info.value).endswith("(did you mean 'npz'?)")
    assert f"known: {', '.join(readers.names())} (" in str(info.value)
    assert {"images", "npy", "npz", "word2vec"} <= set(readers.names())


def test_a_failing_register_hook_leaves_that_plugin_out():
    def boom(register):
        register.add("half", object())  # registered before it failed: withdrawn
        raise RuntimeError("boom")

    plugins = collect(make_manager(extra=[plugin("fragile", mmfuse_register_encoders=boom,
                                                 mmfuse_register_readers=adds("r", "fr"))]))
    assert plugins.broken == {"fragile": "failed in mmfuse_register_encoders: RuntimeError: boom"}
    assert "half" not in plugins.encoders and "fr" not in plugins.readers
    assert plugins.manager.get_plugin("fragile") is None
    assert "dense" in plugins.encoders  # the others are all there
    message = plugins.encoders.unknown_message("half")
    assert "plugin 'fragile' could not be loaded and may be the one that provides it" in message


def test_a_broken_plugin_is_named_by_mmfuse_plugins_with_exit_4(monkeypatch):
    def boom(register):
        raise RuntimeError("boom")

    import mmfuse.plugins

    real = mmfuse.plugins.make_manager
    monkeypatch.setattr(mmfuse.plugins, "make_manager",
                        lambda: real(extra=[plugin("fragile", mmfuse_register_readers=boom)]))
    get_plugins.cache_clear()
    result = invoke("plugins")
    assert result.exit_code == 4
    out = " ".join(result.output.split())
    assert "plugin 'fragile' is left out: failed in mmfuse_register_readers: RuntimeError: boom" \
        in out
    assert "npy" in out  # every other plugin is listed
    assert "Traceback" not in result.output


def test_an_entry_point_that_fails_to_import_is_left_out(monkeypatch):
    class Dist:
        name, version = "mmfuse-gone", "1.0"

    class EntryPoint:
        name, value, group, dist = "gone", "mmfuse_gone", "mmfuse", Dist()

        def load(self):
            raise ImportError("No module named 'mmfuse_gone'")

    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: [*real(group=group), EntryPoint()])
    plugins = collect(make_manager())
    assert plugins.broken == {"gone": "cannot be loaded from mmfuse_gone (package mmfuse-gone "
                                      "1.0): ImportError: No module named 'mmfuse_gone'"}
    assert "npy" in plugins.readers
    assert plugins.distribution("readers").startswith("mmfuse ")


def test_an_import_path_is_imported_when_first_used():
    def lazy(register):
        register.add("later", "json:dumps")
        register.add("gone", "mmfuse_no_such_module:thing")

    plugins = collect(make_manager(extra=[plugin("lazy", mmfuse_register_encoders=lazy)]))
    import json
    assert plugins.encoders.get("later") is json.dumps
    with pytest.raises(PluginError) as info:
        plugins.encoders.get("gone")
    assert str(info.value) == (
        "encoder 'gone' of plugin 'lazy' (mmfuse_no_such_module:thing) cannot be loaded: "
        "ModuleNotFoundError: No module named 'mmfuse_no_such_module'")


def test_a_string_that_is_not_an_import_path_is_refused():
    with pytest.raises(PluginError, match="'dense_enc' is not an import path"):
        collect(make_manager(extra=[plugin("str", mmfuse_register_encoders=lambda register:
                                           register.add("x", "dense_enc"))]))


BROKEN_PLUGIN = {
    "mmfuse_broken_testplugin.py": "raise ImportError(\"No module named 'missing_dep'\")\n",
    "mmfuse_broken_testplugin-0.1.dist-info/METADATA":
        "Metadata-Version: 2.1\nName: mmfuse-broken-testplugin\nVersion: 0.1\n",
    "mmfuse_broken_testplugin-0.1.dist-info/entry_points.txt":
        "[mmfuse]\nbroken = mmfuse_broken_testplugin\n",
}


def _mmfuse_cli(*argv, cwd, pythonpath):
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([sys.executable, "-m", "mmfuse", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_broken_installed_package_leaves_every_other_command_working(tmp_path):
    site = tmp_path / "site"
    for rel, text in BROKEN_PLUGIN.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    listed = _mmfuse_cli("plugins", cwd=tmp_path, pythonpath=site)
    assert listed.returncode == 4
    err = " ".join(listed.stderr.split())
    assert ("plugin 'broken' is left out: cannot be loaded from mmfuse_broken_testplugin "
            "(package mmfuse-broken-testplugin 0.1): ImportError: No module named "
            "'missing_dep'") in err
    assert "npy" in listed.stdout
    helped = _mmfuse_cli("--help", cwd=tmp_path, pythonpath=site)
    assert helped.returncode == 0 and "validate" in helped.stdout
    assert "warning: plugin 'broken' is left out" in helped.stderr
    spec = write_multiview(tmp_path)
    checked = _mmfuse_cli("validate", str(spec), cwd=tmp_path, pythonpath=site)
    assert checked.returncode == 0, checked.stderr
    assert "spec and data OK" in " ".join(checked.stdout.split())


def test_help_and_plugins_import_no_heavy_library():
    """Start-up stays light: the command line and the plugin list import neither torch nor
    the libraries behind the readers (each is imported by the command that needs it)."""
    code = ("import sys\n"
            "from typer.testing import CliRunner\n"
            "from mmfuse.cli import app\n"
            "for argv in (['--help'], ['plugins'], ['train', '--help'], ['data', '--help'],"
            " ['bench', '--help'], ['validate', '--help']):\n"
            "    assert CliRunner().invoke(app, argv).exit_code == 0, argv\n"
            "heavy = {'torch', 'torchvision', 'sklearn', 'scipy', 'pandas', 'gensim', 'PIL',"
            " 'networkx'}\n"
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- default encoder


@pytest.mark.parametrize(
    ("side", "shape", "expected"),
    [
        ("tensor", (3, 16, 16), "conv"),
        ("tensor", (1, 64, 64), "conv"),
        ("tensor", (16, 16), "dense"),
        ("tensor", (2, 3, 16, 16), "dense"),
        ("tensor", (7,), "dense"),
        ("row", (24,), "dense"),
        ("col", (48,), "dense"),
        ("entity", (100,), "dense"),
    ],
)
def test_builtin_default_encoder(side, shape, expected):
    hook = get_plugins().manager.hook.mmfuse_default_encoder
    assert hook(view=ViewSide(view="v", side=side, in_shape=shape)) == expected


def _auto_cover_spec(tmp_path: Path) -> Path:
    spec = write_multiview(tmp_path)
    text = spec.read_text()
    old = "encoder: {type: conv, params: {channels: [4, 2], hidden: 16}}"
    assert old in text
    spec.write_text(text.replace(old, "encoder: {type: auto}"))
    return spec


def test_a_plugin_overrides_the_default_encoder(tmp_path):
    seen = []

    def mmfuse_default_encoder(view):
        seen.append((view.view, view.side))
        return "dense" if view.side == "tensor" else None

    pm = make_manager()
    pm.register(plugin("flat_images", mmfuse_default_encoder=mmfuse_default_encoder))
    plugins = collect(pm)
    hook = plugins.manager.hook.mmfuse_default_encoder
    assert hook(view=ViewSide("cover", "tensor", (3, 16, 16))) == "dense"
    assert hook(view=ViewSide("text", "row", (24,))) == "dense"  # passed on to the built-in
    assert seen == [("cover", "tensor"), ("text", "row")]

    spec = load_spec(_auto_cover_spec(tmp_path))
    assert type(build(spec, get_plugins(), "cpu").model.codecs["cover:tensor"]).__name__ == (
        "ConvAutoencoder")
    overridden = build(spec, plugins, "cpu").model.codecs["cover:tensor"]
    assert type(overridden).__name__ == "DenseAutoencoder"
    assert ("cover", "tensor") in seen


def test_an_overriding_plugin_can_name_its_own_encoder():
    from mmfuse_encoders.dense import build_dense

    p = plugin(
        "mine",
        mmfuse_register_encoders=lambda register: register.add("mine", build_dense),
        mmfuse_default_encoder=lambda view: "mine",
    )
    plugins = collect(make_manager(extra=[p]))
    assert plugins.manager.hook.mmfuse_default_encoder(
        view=ViewSide("v", "tensor", (3, 16, 16))) == "mine"
    assert plugins.encoders.get("mine") is build_dense


# --------------------------------------------------------------------------- hook specs


def test_misspelt_hook_fails_loudly():
    def mmfuse_register_encodrs(register):
        register.add("x", object())

    with pytest.raises(PluginError, match="mmfuse_register_encodrs"):
        make_manager(extra=[plugin("typo", mmfuse_register_encodrs=mmfuse_register_encodrs)])


def test_misspelt_hook_argument_is_a_plugin_error():
    def mmfuse_register_encoders(registr):
        pass

    with pytest.raises(PluginError, match="registr"):
        make_manager(extra=[plugin("argtypo", mmfuse_register_encoders=mmfuse_register_encoders)])


def _hook_specs() -> dict[str, object]:
    return {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(fn, "mmfuse_spec")}


def test_every_hook_has_a_docstring():
    specs = _hook_specs()
    assert {f"mmfuse_register_{kind}" for kind in KINDS} <= set(specs)
    assert {"mmfuse_default_encoder", "mmfuse_register_commands"} <= set(specs)
    for name, fn in specs.items():
        doc = inspect.getdoc(fn)
        assert doc and len(doc) > 30, name
        assert hasattr(get_plugins().manager.hook, name)


def test_default_encoder_is_firstresult():
    opts = _hook_specs()["mmfuse_default_encoder"].mmfuse_spec
    assert opts["firstresult"] is True


@pytest.mark.skipif(not README.is_file(), reason="no README.md yet")
def test_readme_mentions_every_hook():
    text = README.read_text(encoding="utf-8")
    missing = [name for name in _hook_specs() if name not in text]
    assert not missing


# --------------------------------------------------------------------------- third party

TINY_PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "mmfuse-tiny-testplugin"
version = "0.0.1"

[project.entry-points.mmfuse]
tiny = "mmfuse_tiny"

[tool.setuptools]
packages = ["mmfuse_tiny"]
"""

TINY_INIT = '''\
"""A third-party mmfuse plugin: a linear encoder and a CSV reader."""

import math

import numpy as np
from torch import nn

from mmfuse import hookimpl
from mmfuse.plugin_api import ViewArray


class TinyLinear(nn.Module):
    def __init__(self, in_shape, code_dim, decode):
        super().__init__()
        self.in_shape = tuple(in_shape)
        n = math.prod(in_shape)
        self.enc = nn.Linear(n, code_dim)
        self.dec = nn.Linear(code_dim, n) if decode else None

    def encode(self, x):
        return self.enc(x.flatten(1))

    def decode(self, h):
        return self.dec(h).view(-1, *self.in_shape)


def build_tiny_linear(in_shape, code_dim, *, decode=True):
    return TinyLinear(in_shape, code_dim, decode)


def read_tiny_csv(path, params, ctx):
    if path is None:
        raise ValueError("needs `path`")
    data = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    return ViewArray(data=data, info={"reader": "tiny_csv"})


@hookimpl
def mmfuse_register_encoders(register):
    register.add("tiny_linear", build_tiny_linear)


@hookimpl
def mmfuse_register_readers(register):
    register.add("tiny_csv", read_tiny_csv)
'''

TINY_SPEC = """\
name: tinyrun
entities:
  a: {size: 12}
  b: {size: 5}
views:
  m:
    rows: a
    cols: b
    source: {reader: tiny_csv, path: m.csv}
    encoder: {type: tiny_linear}
    col_encoder: {type: tiny_linear}
model: {dim: 4}
train: {epochs: 3, batch_size: 4, device: cpu}
"""


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, capture_output=True,
                   timeout=300)


@pytest.fixture
def tiny_installed(tmp_path):
    pkg = tmp_path / "tiny"
    (pkg / "mmfuse_tiny").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(TINY_PYPROJECT)
    (pkg / "mmfuse_tiny" / "__init__.py").write_text(TINY_INIT)
    _pip("install", "--no-deps", "--no-build-isolation", "-q", str(pkg))
    importlib.invalidate_caches()
    get_plugins.cache_clear()
    try:
        yield
    finally:
        _pip("uninstall", "-y", "-q", "mmfuse-tiny-testplugin")
        sys.modules.pop("mmfuse_tiny", None)
        importlib.invalidate_caches()
        get_plugins.cache_clear()
    assert "tiny_linear" not in get_plugins().encoders  # uninstalled: gone again


def test_third_party_plugin_is_listed_and_trains(tiny_installed, tmp_path, read_plugin_table):
    result = invoke("plugins")
    assert result.exit_code == 0, result.output
    rows = read_plugin_table(result.output)
    assert rows["tiny_linear"] == ("encoder", "tiny")
    assert rows["tiny_csv"] == ("reader", "tiny")
    assert rows["dense"] == ("encoder", "encoders")

    rng = np.random.default_rng(0)
    np.savetxt(tmp_path / "m.csv", rng.standard_normal((12, 5)), delimiter=",")
    spec = tmp_path / "spec.yaml"
    spec.write_text(TINY_SPEC)
    check = invoke("validate", spec)
    assert check.exit_code == 0, check.output
    assert "TinyLinear" in check.output

    run = tmp_path / "run"
    result = invoke("train", spec, "--out", run, "--epochs", 1, "-q")
    assert result.exit_code == 0, result.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["training"]["epochs_run"] == 1
    assert manifest["data"]["readers"]["m"] == {"reader": "tiny_csv"}
    # two linear autoencoders (5→4→5 rows, 12→4→12 columns); one code per entity, width d:
    # identity fusion
    row_ae, col_ae, factor_intercept = 5 * 4 + 4 + 4 * 5 + 5, 12 * 4 + 4 + 4 * 12 + 12, 1
    assert manifest["model"]["parameters"] == row_ae + col_ae + factor_intercept
    assert np.load(run / "embeddings" / "a.npy").shape == (12, 4)
    assert np.load(run / "embeddings" / "b.npy").shape == (5, 4)


def test_hookimpl_marker_is_the_project_marker():
    assert hookimpl.project_name == "mmfuse"
    assert hookspecs.hookspec.project_name == "mmfuse"
    p = plugin("marked", mmfuse_register_callbacks=adds("mmfuse_register_callbacks", "cb"))
    assert collect(make_manager(extra=[p])).callbacks.entries["cb"].plugin == "marked"

