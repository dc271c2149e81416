"""`mmfuse bench --quick` on tiny settings: every row present or saying why not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmfuse.bench import methods as methods_mod
from mmfuse.bench import runner
from mmfuse.bench.packaged import datasets, load_bench_spec, published_numbers
from mmfuse.bench.runner import run_bench
from mmfuse.cli import app
from mmfuse.errors import MmfuseError
from mmfuse.evaluate import split_indices

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_bench_writes_report_results_and_plots(tmp_path):
    (tmp_path / "specs").mkdir()
    spec = tmp_path / "specs" / "goodreads.yaml"
    shutil.copy(REPO / "specs" / "goodreads.yaml", spec)
    out = tmp_path / "bench"
    args = ["bench", "--dataset", "goodreads", "--spec", str(spec), "--quick", "--seeds", "2",
            "--methods", "mmfuse,mmeda2,convae_mf,pretrained_mf_resnet18,cmf_efficientnet_lite0,"
            "mlp_efficientnet_lite0,cmfrec_efficientnet_lite0",
            "--set", "dataset.params.n_books=80", "--set", "train.epochs=1",
            "--set", "evaluate.baseline_dim=8", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert rows["mmeda2"]["targets"]["genre"]["accuracy"]["n"] == 2  # two seeds
    assert rows["mmfuse"]["skipped"] is None and rows["mmfuse"]["targets"]["genre"]["f1"]["n"] == 2
    assert rows["mmfuse"]["targets"]["rating"] != rows["mmeda2"]["targets"]["rating"]
    assert rows["convae_mf"]["targets"]["rating"]["mse"]["n"] == 2
    assert rows["floor"]["targets"]["genre"]["recall"]["mean"] == 1.0  # majority is fiction
    assert {"raw_cover", "raw_description", "raw_concat"} <= set(rows)
    assert "resnet18-f37072fd.pth is missing" in rows["pretrained_mf_resnet18"]["skipped"]
    assert rows["mmeda2"]["resources"]["train_seconds"]["mean"] > 0
    for name in ("cmf_efficientnet_lite0", "mlp_efficientnet_lite0",
                 "cmfrec_efficientnet_lite0"):
        assert rows[name]["skipped"] is None, rows[name]["skipped"]
        assert rows[name]["targets"]["genre"]["f1"]["n"] == 2
    report = (out / "report.md").read_text()
    assert "SYNTHETIC" in report
    assert "published (paper, not measured)" in report and "f1 0.7727" in report
    assert "Rows not run" in report
    for png in ("genre_accuracy.png", "loss_curves.png", "projection.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------- fast: rows that do not train

N = 60


def write_tiny(folder: Path, holdout: bool = False) -> Path:
    """Users × items ratings (low rank), a 0/1 label per user; a spec probing the users."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    u, v = rng.standard_normal((N, 3)), rng.standard_normal((30, 3))
    np.save(folder / "ratings.npy", (u @ v.T).astype(np.float32))
    np.save(folder / "label.npy", (u[:, 0] > 0).astype(np.int64))
    (folder / "labels.txt").write_text("negative\npositive\n")
    held = "\n  holdout: {views: [ratings], fraction: 0.2}" if holdout else ""
    (folder / "tiny.yaml").write_text(f"""\
name: tiny
entities: {{user: {{size: {N}}}, item: {{size: 30}}}}
views:
  ratings: {{rows: user, cols: item, source: {{reader: npy, path: ratings.npy}}}}
model: {{dim: 4}}
train: {{epochs: 2, batch_size: 32, device: cpu}}
evaluate:
  baselines: none
  targets:
    label: {{entity: user, path: label.npy, task: classification, probe: logistic}}{held}
""")
    return folder / "tiny.yaml"


class Fake:
    """A row that returns embeddings at once (informative ones, or noise), counting its
    calls and what the results file held when it was called."""

    def __init__(self, out: Path, interrupt_at: int | None = None, flip: bool = False):
        self.out, self.interrupt_at, self.flip = out, interrupt_at, flip
        self.calls: list[int] = []
        self.seen: list[int] = []  # finished runs in results.json at each call

    def __call__(self, ctx: methods_mod.Context) -> methods_mod.Output:
        results = self.out / "results.json"
        self.seen.append(json.loads(results.read_text())["finished_runs"]
                         if results.is_file() else 0)
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls.append(ctx.seed)
        self.workdir = ctx.workdir
        rng = np.random.default_rng(ctx.seed)
        y = np.load(ctx.spec.evaluate.targets["label"].path)
        signal = 2.0 * y
        if self.flip:  # the test split's labels reversed: worse than the majority class
            _, test = split_indices(y, ctx.spec.evaluate.split, "classification")
            signal[test] = 2.0 * (1 - y[test])
        z = 0.1 * rng.standard_normal((N, 4)) + signal[:, None]
        return methods_mod.Output({"user": z, "item": np.zeros((30, 4))}, 0.01, N)


def fake_rows(monkeypatch, fakes: dict[str, Fake]) -> None:
    rows = [methods_mod.Method(name, f"fake {name}", fake) for name, fake in fakes.items()]
    monkeypatch.setattr(runner, "all_methods", lambda: rows)


def test_resume_keeps_finished_runs_and_the_report_follows_every_run(tmp_path, monkeypatch):
    spec, out = write_tiny(tmp_path / "d"), tmp_path / "bench"
    good, late = Fake(out), Fake(out, interrupt_at=1)
    fake_rows(monkeypatch, {"good": good, "late": late})
    args = {"seeds": 2, "out": out, "spec_path": spec}
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the second run of `late`
        run_bench("tiny", **args)
    assert good.calls == [0, 1] and late.calls == [0]
    assert good.seen == [0, 1] and late.seen == [2, 3]  # written after every run
    report = (out / "report.md").read_text()
    assert "In progress: 3 of 4 runs finished" in report and "fake late" in report
    before = json.loads((out / "results.json").read_text())["rows"]
    assert len(before["good"]["runs"]) == 2 and len(before["late"]["runs"]) == 1

    with pytest.raises(MmfuseError, match="--resume"):  # without it: refused, nothing lost
        run_bench("tiny", **args)
    good2, late2 = Fake(out), Fake(out)
    fake_rows(monkeypatch, {"good": good2, "late": late2})
    result = run_bench("tiny", **args, resume=True)
    assert good2.calls == [] and late2.calls == [1]  # only the unfinished run
    assert result.complete and result.resumed_runs == 3
    after = json.loads((out / "results.json").read_text())
    assert after["complete"] and after["rows"]["good"]["runs"] == before["good"]["runs"]
    assert after["rows"]["late"]["targets"]["label"]["accuracy"]["n"] == 2
    assert "In progress" not in (out / "report.md").read_text()
    with pytest.raises(MmfuseError, match="another spec"):  # resume checks it is the same bench
        run_bench("tiny", **args, resume=True, overrides=["model.dim=3"])


@pytest.mark.parametrize("seeds", [1, 2])
def test_std_only_with_two_seeds_best_marked_floor_flagged(tmp_path, monkeypatch, seeds):
    spec, out = write_tiny(tmp_path / "d"), tmp_path / "bench"
    fake_rows(monkeypatch, {"good": Fake(out), "noise": Fake(out, flip=True)})
    run_bench("tiny", seeds=seeds, out=out, spec_path=spec)
    report = (out / "report.md").read_text()
    table = report[report.index("## label"):report.index("## Cost")]
    assert ("±" in table) == (seeds > 1)
    assert ("mean ± sample std" in report) == (seeds > 1)
    good = next(line for line in table.splitlines() if line.startswith("| fake good"))
    noise = next(line for line in table.splitlines() if line.startswith("| fake noise"))
    floor = next(line for line in table.splitlines() if line.startswith("| trivial floor"))
    assert "**" in good and "below floor" not in good
    assert "below floor" in noise and "**" not in floor
    for png in ("label_accuracy.png", "projection.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    projection = json.loads((out / "results.json").read_text())["projection"]
    assert set(projection["labels"]) == {"negative", "positive"}  # names from labels.txt
    assert len(projection["explained"]) == 2 and 0 < sum(projection["explained"]) <= 1


def test_class_names_from_a_file_beside_the_labels(tmp_path):
    np.save(tmp_path / "category.npy", np.array([1, 0, 2]))
    assert runner.class_names(tmp_path / "category.npy", np.array([1, 0, 2])) == ["1", "0", "2"]
    (tmp_path / "categories.txt").write_text("a\nb\nc\n")
    assert runner.class_names(tmp_path / "category.npy", np.array([1, 0, 2])) == ["b", "a", "c"]


# ------------------------------------------------------- packaged specs: outside the checkout


def test_packaged_specs_are_the_repository_specs_with_data_under_the_working_dir(tmp_path):
    from importlib import resources

    names = datasets()
    shipped = {p.stem for p in (REPO / "specs").glob("*.yaml")}
    assert set(names) == shipped, ("every specs/NAME.yaml is packaged for `mmfuse bench`: add "
                                   "the link mmfuse/bench/specs/NAME.yaml -> "
                                   "../../../specs/NAME.yaml")
    for name in names:  # the package's (links in a checkout, files in a wheel) = specs/
        packaged = resources.files("mmfuse.bench").joinpath(f"specs/{name}.yaml")
        assert packaged.read_text() == (REPO / "specs" / f"{name}.yaml").read_text()
    chosen = load_bench_spec("emoji", None, ["train.epochs=2"], cwd=tmp_path)
    assert "packaged" in chosen.shown and chosen.spec.train.epochs == 2
    assert chosen.spec.dataset.root == tmp_path / "data" / "emoji"
    assert chosen.spec.evaluate.targets["category"].path == tmp_path / "data/emoji/category.npy"
    assert published_numbers("goodreads")["mmeda2"]["f1"] > 0
    with pytest.raises(MmfuseError, match="--spec"):
        load_bench_spec("nope", None, [], cwd=tmp_path)
    (tmp_path / "specs").mkdir()  # the working directory's own specs/ come first
    shutil.copy(REPO / "specs" / "emoji.yaml", tmp_path / "specs" / "emoji.yaml")
    assert load_bench_spec("emoji", None, [], cwd=tmp_path).shown == "specs/emoji.yaml"


@pytest.mark.slow  # ≈ 14 s: makes the synthetic Goodreads sample and trains a row
def test_bench_runs_from_another_working_directory(tmp_path, monkeypatch):
    """The packaged goodreads spec from an empty folder: its synthetic data made in
    ./data/goodreads, the report in ./bench/goodreads."""
    monkeypatch.chdir(tmp_path)
    args = ["bench", "--dataset", "goodreads", "--quick", "--seeds", "1",
            "--methods", "cmf_resnet18,mmfuse",
            "--set", "dataset.params.n_books=60", "--set", "train.epochs=1",
            "--set", "evaluate.baselines=none"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "goodreads").is_dir()
    report = (tmp_path / "bench" / "goodreads" / "report.md").read_text()
    assert "packaged goodreads.yaml" in report and "fake" not in report
    rows = json.loads((tmp_path / "bench" / "goodreads" / "results.json").read_text())["rows"]
    assert rows["mmfuse"]["targets"]["genre"]["accuracy"]["n"] == 1


def test_cli_resume_and_interrupt_from_another_working_directory(tmp_path, monkeypatch):
    write_tiny(tmp_path / "specs")  # specs/tiny.yaml of the working directory
    monkeypatch.chdir(tmp_path)
    fake_rows(monkeypatch, {"good": Fake(tmp_path / "bench" / "tiny", interrupt_at=1)})
    args = ["bench", "--dataset", "tiny", "--seeds", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130
    assert "1 of 2 runs finished and kept in bench/tiny" in result.output
    assert "continue with:" in result.output and "--resume" in result.output
    fake = Fake(tmp_path / "bench" / "tiny")
    fake_rows(monkeypatch, {"good": fake})
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "add --resume" in result.output
    result = CliRunner().invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert fake.calls == [1] and "kept 1 finished run of" in result.output
    # absolute: a row's spec variant names files there (ConvAE MF's codes), and a spec's
    # relative paths are taken from its own folder, not from the working directory
    assert fake.workdir == tmp_path / "bench" / "tiny" / "runs"
    report = (tmp_path / "bench" / "tiny" / "report.md").read_text()
    assert "Spec: specs/tiny.yaml" in report and "1 run kept from an earlier bench" in report


# ------------------------------------------------------------------ held-out cells in the report


def test_held_out_cells_table_in_the_report(tmp_path):
    spec, out = write_tiny(tmp_path / "d", holdout=True), tmp_path / "bench"
    run_bench("tiny", methods=["mmeda2"], seeds=1, out=out, spec_path=spec)
    report = (out / "report.md").read_text()
    assert "## Held-out cells of `ratings`" in report
    table = report[report.index("## Held-out cells"):]
    for label in ("MMEDA-II", "held-out baseline: biases", "held-out baseline: global mean"):
        assert f"| {label}" in table
    assert "rmse" in table and "**" in table
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert rows["mmeda2"]["holdout"]["ratings"]["rmse"]["n"] == 1
    assert rows["cells_biases"]["holdout"]["ratings"]["rmse"]["mean"] > 0
