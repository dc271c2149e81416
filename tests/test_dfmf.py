"""The ``dicty`` / ``pharma`` datasets: parsing scikit-fusion's gzip CSV files, aligning them by
name, the cached sdist (a fake one here: no download), and the shipped spec on fake data."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import mmfuse_dfmf.fetch as fetch
import numpy as np
import pytest
from mmfuse_dfmf.dataset import DfmfDataset
from mmfuse_dfmf.tables import parse_table, split_names

from mmfuse.api import train
from mmfuse.graph import build_graph
from mmfuse.plugins import get_plugins
from mmfuse.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
PREFIX = "scikit-fusion-0.2.1/skfusion/datasets/data"


def csv_gz(rows: list[str], cols: list[str], values: np.ndarray, header_cols: str | None = None,
           header_rows: str | None = None) -> bytes:
    """One file in scikit-fusion's format: row names, column names, then numbers; NaN → ''."""
    lines = [header_rows or ",".join(rows), header_cols or ",".join(cols)]
    lines += [",".join("" if np.isnan(v) else f"{v:g}" for v in row) for row in values]
    return gzip.compress(("\n".join(lines) + "\n").encode("utf-8"))


def write_sdist(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


class FakeDicty:
    """Genes with known values, each file listing them in its own order (and PPI one extra)."""

    def __init__(self, n_genes=40, n_conditions=6, n_terms=5, seed=0):
        rng = np.random.default_rng(seed)
        self.genes = [f"DDB_G{1000 + 7 * i:07d}" for i in range(n_genes)]
        self.conditions = [f"D{i}_M1_R6" for i in range(n_conditions)]
        self.terms = [f"GO:{i:07d}" for i in range(n_terms)]
        self.expr = {g: rng.uniform(0, 500, n_conditions).round(3) for g in self.genes}
        self.expr[self.genes[3]] = np.zeros(n_conditions)  # an unmeasured gene
        self.go = {g: (rng.random(n_terms) < 0.4).astype(float) for g in self.genes}
        for i, g in enumerate(self.genes):
            self.go[g][i % n_terms] = 1.0  # every term has positives
        edges = {(a, b) for a in range(n_genes) for b in range(a + 1, n_genes)
                 if rng.random() < 0.15}
        self.edges = {(self.genes[a], self.genes[b]) for a, b in edges}
        self.orders = [list(rng.permutation(self.genes)) for _ in range(3)]

    def files(self) -> dict[str, bytes]:
        expr_order, go_order, ppi_order = self.orders
        expr = np.array([self.expr[g] for g in expr_order])
        go = np.array([np.where(self.go[g] == 1, 1.0, np.nan) for g in go_order])
        ppi_genes = [*ppi_order, "DDB_G9999999"]  # only in the PPI file: dropped
        ppi = np.full((len(ppi_genes), len(ppi_genes)), np.nan)
        index = {g: i for i, g in enumerate(ppi_genes)}
        for a, b in self.edges:  # one direction only: the writer symmetrises
            ppi[index[a], index[b]] = -0.05
        return {
            f"{PREFIX}/dicty/dicty.gene_expression.csv.gz": csv_gz(expr_order, self.conditions,
                                                                   expr),
            f"{PREFIX}/dicty/dicty.gene_annnotations.csv.gz": csv_gz(go_order, self.terms, go),
            f"{PREFIX}/dicty/dicty.ppi.csv.gz": csv_gz(ppi_genes, ppi_genes, ppi),
        }


@pytest.fixture
def fake_dicty(tmp_path) -> tuple[FakeDicty, Path]:
    fake = FakeDicty()
    cache = tmp_path / "cache"
    write_sdist(cache / "scikit-fusion-0.2.1.tar.gz", fake.files())
    return fake, cache


@pytest.fixture(autouse=True)
def _no_pip(request, monkeypatch):
    """No test of the default suite may download anything."""
    if request.node.get_closest_marker("slow"):
        return

    def refuse(*args, **kwargs):
        raise AssertionError(f"subprocess.run called: {args}")
    monkeypatch.setattr(fetch.subprocess, "run", refuse)


def test_dicty_files_are_aligned_by_gene_name(fake_dicty, tmp_path):
    fake, cache = fake_dicty
    root = tmp_path / "dicty"
    message = DfmfDataset("dicty").ensure(root, {"cache": str(cache)})
    assert "real data" in message and "40 genes" in message
    genes = (root / "genes.txt").read_text().splitlines()
    assert genes == sorted(fake.genes)  # the PPI-only gene is dropped
    assert (root / "conditions.txt").read_text().splitlines() == fake.conditions
    assert (root / "go_terms.txt").read_text().splitlines() == fake.terms
    raw, expr = np.load(root / "expression_raw.npy"), np.load(root / "expression.npy")
    go, ppi = np.load(root / "go.npy"), np.load(root / "ppi.npy")
    assert raw.shape == (40, 6) and go.shape == (40, 5) and ppi.shape == (40, 40)
    for i, gene in enumerate(genes):
        np.testing.assert_allclose(raw[i], fake.expr[gene], rtol=1e-6)
        np.testing.assert_array_equal(go[i], fake.go[gene])
    unmeasured = genes.index(fake.genes[3])
    assert np.isnan(expr[unmeasured]).all()
    measured = np.delete(np.arange(40), unmeasured)
    np.testing.assert_allclose(expr[measured], np.log2(1 + raw[measured]), rtol=1e-6)
    z = np.load(root / "expression_z.npy")
    np.testing.assert_allclose(z[measured].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z[measured].std(axis=0), 1, rtol=1e-4)
    assert np.isnan(z[unmeasured]).all()
    index = {g: i for i, g in enumerate(genes)}
    want = np.zeros((40, 40), np.float32)
    for a, b in fake.edges:
        want[index[a], index[b]] = want[index[b], index[a]] = 1
    np.testing.assert_array_equal(ppi, want)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["counts"] == {"genes": 40, "conditions": 6, "go_terms": 5}
    assert manifest["alignment"]["dropped_per_axis"]["dicty.ppi.csv.gz:rows"] == 1
    assert manifest["alignment"]["files_list_them_in_one_same_order"] is False
    assert manifest["stats"]["genes_all_zero_expression"] == 1


def test_manifest_is_written_last_and_a_prepared_folder_is_reused(fake_dicty, tmp_path):
    _, cache = fake_dicty
    root = tmp_path / "dicty"
    DfmfDataset("dicty").ensure(root, {"cache": str(cache)})
    stamps = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}
    assert stamps["manifest.json"] == max(stamps.values())
    (cache / "scikit-fusion-0.2.1.tar.gz").unlink()  # not needed any more
    DfmfDataset("dicty").ensure(root, {"cache": str(cache)})
    assert {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == stamps


def test_refuses_foreign_folders_and_unknown_params(fake_dicty, tmp_path):
    _, cache = fake_dicty
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="holds other files"):
        DfmfDataset("dicty").ensure(tmp_path / "mine", {"cache": str(cache)})
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    with pytest.raises(ValueError, match="unknown params"):
        DfmfDataset("dicty").ensure(tmp_path / "d", {"cahce": str(cache)})


def test_pip_failure_is_a_clear_error_with_pips_message(tmp_path, monkeypatch):
    def failing_pip(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")
    monkeypatch.setattr(fetch.subprocess, "run", failing_pip)
    with pytest.raises(ValueError, match="(?s)pip download scikit-fusion==0.2.1 failed.*"
                                         "No matching distribution"):
        DfmfDataset("dicty").ensure(tmp_path / "d", {"cache": str(tmp_path / "cache")})
    assert not (tmp_path / "d" / "manifest.json").exists()


def test_cache_defaults_to_mmfuse_cache_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path))
    assert fetch.cache_dir({}) == tmp_path / "pypi"
    monkeypatch.delenv("MMFUSE_CACHE")
    assert fetch.cache_dir({}) == Path.home() / ".cache" / "mmfuse" / "pypi"


def test_a_link_in_the_tarball_is_refused(tmp_path):
    files = FakeDicty().files()
    ppi = f"{PREFIX}/dicty/dicty.ppi.csv.gz"
    data = {k: v for k, v in files.items() if k != ppi}
    write_sdist(tmp_path / "c" / "scikit-fusion-0.2.1.tar.gz", data, links={ppi: "/etc/passwd"})
    with pytest.raises(ValueError, match="not a regular file"):
        DfmfDataset("dicty").ensure(tmp_path / "d", {"cache": str(tmp_path / "c")})


def test_header_names_with_commas_are_split_to_the_data_width():
    header = "Vitamins,Anesthetics, General,Analgesics"
    assert split_names(header, 3)[0] == ["Vitamins", "Anesthetics, General", "Analgesics"]
    header = "MolPort,Fluoropharm Co.,Ltd,ChEBI"
    assert split_names(header, 3)[0] == ["MolPort", "Fluoropharm Co.,Ltd", "ChEBI"]
    names, rule = split_names("a,b,c,d", 3)
    assert names is None and "ambiguous" in rule
    table = parse_table(csv_gz(["r1", "r2"], [], np.array([[1, np.nan], [np.nan, 0.5]]),
                               header_cols="x, y,z"), "t.csv.gz")
    assert table.cols == ["x, y", "z"] and table.rows == ["r1", "r2"]
    np.testing.assert_array_equal(np.isnan(table.values), [[False, True], [True, False]])
    with pytest.raises(ValueError, match="line 4: 3 values"):
        parse_table(gzip.compress(b"a,b\nx,y\n1,2\n1,2,3\n"), "bad.csv.gz")


def test_pharma_is_aligned_by_chemical_and_depositor_name(tmp_path):
    rng = np.random.default_rng(0)
    chems = ["5560", "16078", "23994", "444033"]
    deps = ["MolPort", "Fluoropharm Co.,Ltd", "AstaTech, Inc."]
    order_a, order_b = chems[::-1], [chems[i] for i in (2, 0, 3, 1)]
    truth = {c: rng.integers(0, 2, 3).astype(float) for c in chems}
    dep_truth = {c: rng.integers(0, 2, 3).astype(float) for c in chems}
    cats = {d: rng.integers(0, 2, 2).astype(float) for d in deps}
    dep_order = [deps[i] for i in (2, 0, 1)]
    files = {
        "actions": csv_gz(order_a, [], np.array([truth[c] for c in order_a]),
                          header_cols="Vitamins,Anesthetics, General,Analgesics"),
        "pubmed": csv_gz(order_b, ["11", "12"], rng.integers(0, 2, (4, 2)).astype(float)),
        "depositors": csv_gz(order_b, dep_order, np.array([dep_truth[c] for c in order_b])),
        "fingerprints": csv_gz(order_a, ["0", "1"], rng.integers(0, 2, (4, 2)).astype(float)),
        "depo_cats": csv_gz(deps, ["", "Substance Vendors"], np.array([cats[d] for d in deps])),
        "tanimoto": csv_gz(order_b, order_b, -1e-4 * rng.integers(0, 100, (4, 4)) / 100),
    }
    write_sdist(tmp_path / "c" / "scikit-fusion-0.2.1.tar.gz",
                {f"{PREFIX}/pharma/pharma.{k}.csv.gz": v for k, v in files.items()})
    root = tmp_path / "pharma"
    DfmfDataset("pharma").ensure(root, {"cache": str(tmp_path / "c")})
    written = (root / "chemicals.txt").read_text().splitlines()
    assert written == ["5560", "16078", "23994", "444033"]  # numeric order
    assert (root / "actions.txt").read_text().splitlines()[1] == "Anesthetics, General"
    depositors = (root / "depositors.txt").read_text().splitlines()
    assert sorted(depositors) == sorted(deps)
    assert (root / "depositor_categories.txt").read_text().splitlines()[0] == "(unnamed category 0)"
    actions, dep = np.load(root / "actions.npy"), np.load(root / "depositors.npy")
    depo_cats, tanimoto = np.load(root / "depo_cats.npy"), np.load(root / "tanimoto.npy")
    for i, c in enumerate(written):
        np.testing.assert_array_equal(actions[i], truth[c])
        for j, d in enumerate(depositors):
            assert dep[i, j] == dep_truth[c][dep_order.index(d)]
    for j, d in enumerate(depositors):
        np.testing.assert_array_equal(depo_cats[j], cats[d])
    assert tanimoto.shape == (4, 4) and tanimoto.min() >= 0 and tanimoto.max() <= 1


def test_shipped_spec_validates_and_trains_on_fake_data(fake_dicty, tmp_path):
    """specs/dicty.yaml as shipped, its data folder relocated under tmp_path."""
    _, cache = fake_dicty
    (tmp_path / "specs").mkdir()
    spec_path = tmp_path / "specs" / "dicty.yaml"
    shutil.copy(REPO / "specs" / "dicty.yaml", spec_path)
    build_graph(load_spec(REPO / "specs" / "dicty.yaml"), get_plugins())
    spec = load_spec(spec_path, [f"dataset.params.cache={cache}", "train.epochs=1",
                                 "train.device=cpu",
                                 "evaluate.targets.go_rf.params.n_estimators=5"])
    result = train(spec, tmp_path / "run")
    go = result.evaluation["targets"]["go"]
    assert go["task"] == "multilabel" and go["n_train"] == 32 and go["n_test"] == 8
    assert set(go["baselines"]) == {"expression", "ppi", "concat", "pca"}
    assert np.load(tmp_path / "run" / "embeddings" / "gene.npy").shape == (40, 50)


def test_go_can_be_switched_into_a_view_with_set(fake_dicty, tmp_path):
    _, cache = fake_dicty
    (tmp_path / "specs").mkdir()
    spec_path = tmp_path / "specs" / "dicty.yaml"
    shutil.copy(REPO / "specs" / "dicty.yaml", spec_path)
    spec = load_spec(spec_path, [
        f"dataset.params.cache={cache}", "train.epochs=1", "train.device=cpu",
        "evaluate.baselines=none", "evaluate.targets.go_rf.params.n_estimators=5",
        "entities.go_term.ids=../data/dicty/go_terms.txt", "views.go.rows=gene",
        "views.go.cols=go_term", "views.go.likelihood=bernoulli", "views.go.source.reader=npy",
        "views.go.source.path=../data/dicty/go.npy"])
    result = train(spec, tmp_path / "run")
    assert "go.factor" in result.trainer.history[-1]
    assert np.load(tmp_path / "run" / "embeddings" / "go_term.npy").shape == (5, 50)


@pytest.mark.slow
def test_real_scikit_fusion_download(tmp_path):
    """pip download of the real sdist (needs PyPI), then the real shapes."""
    cache = tmp_path / "cache"
    message = DfmfDataset("dicty").ensure(tmp_path / "dicty", {"cache": str(cache)})
    assert "1,219 genes, 282 conditions, 116 go_terms" in message
    root = tmp_path / "dicty"
    assert np.load(root / "expression.npy").shape == (1219, 282)
    assert np.load(root / "ppi.npy").shape == (1219, 1219)
    go = np.load(root / "go.npy")
    assert go.shape == (1219, 116) and set(np.unique(go)) == {0.0, 1.0}
    assert go.sum(axis=1).min() >= 1  # every gene has a GO term
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["alignment"]["files_list_them_in_one_same_order"] is True
    # by name and by position agree here, since the real files share one gene order
    files = fetch.read_data_files(fetch.find_sdist(cache), "dicty",
                                  ["dicty.gene_expression.csv.gz"])
    table = parse_table(files["dicty.gene_expression.csv.gz"], "expression")
    genes = (root / "genes.txt").read_text().splitlines()
    order = [table.rows.index(g) for g in genes]
    np.testing.assert_allclose(np.load(root / "expression_raw.npy"), table.values[order],
                               rtol=1e-6)
    pharma = DfmfDataset("pharma").ensure(tmp_path / "pharma", {"cache": str(cache)})
    assert "1,260 chemicals, 130 actions" in pharma and "189 depositors" in pharma
    assert np.load(tmp_path / "pharma" / "pubmed.npy").shape == (1260, 7948)
