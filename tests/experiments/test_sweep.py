"""experiments/sweep.py on a tiny grid: output files, one row per run, tuning, resume."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fedprune.config import RunConfig
from fedprune.privacy.ledger_store import LedgerStore
from fedprune.summary import RunSummary

SWEEP_PATH = Path(__file__).resolve().parents[2] / "experiments" / "sweep.py"
TINY = {"optim.epochs": 1, "warmup.epochs": 1, "privacy.target-epsilon": 2.0}


@pytest.fixture(scope="module")
def sweep() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sweep", SWEEP_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sweep"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def counted(sweep: ModuleType, monkeypatch: pytest.MonkeyPatch) -> list[RunConfig]:
    """Record every config the sweep actually trains."""
    calls: list[RunConfig] = []
    real = sweep.run_centralised

    def run(config: RunConfig, **kwargs: Any) -> RunSummary:
        # Every run keeps a fresh ledger of its own, inside its own run directory.
        store = kwargs["ledger_store"]
        assert store.directory == Path(config.out_dir) / "ledger"
        assert not store.directory.exists()
        calls.append(config)
        return real(config, **kwargs)

    monkeypatch.setattr(sweep, "run_centralised", run)
    return calls


def test_parse_assignment_types_values_like_defaults(sweep: ModuleType) -> None:
    assert sweep.parse_assignment("mask.strategy=none,random") == (
        "mask.strategy",
        ["none", "random"],
    )
    assert sweep.parse_assignment("privacy.target-epsilon=1,2") == (
        "privacy.target-epsilon",
        [1.0, 2.0],
    )
    assert sweep.parse_assignment("optim.epochs=3") == ("optim.epochs", [3])
    assert sweep.parse_assignment("privacy.enabled=false") == ("privacy.enabled", [False])
    with pytest.raises(ValueError, match=r"unknown config key 'mask\.dens'"):
        sweep.parse_assignment("mask.dens=0.1")
    with pytest.raises(ValueError, match=r"optim\.epochs: expected an integer, got '1\.5'"):
        sweep.parse_assignment("optim.epochs=1.5")


def test_load_overrides_flattens_tables(sweep: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('"mask.density" = 0.05\n[optim]\nlr = 0.1\n')
    assert sweep.load_overrides(path) == {"mask.density": 0.05, "optim.lr": 0.1}


def test_spec_rejects_bad_input(sweep: ModuleType) -> None:
    with pytest.raises(ValueError, match="both in the grid and tuned"):
        sweep.SweepSpec(base={}, grid={"optim.lr": [0.1]}, tune={"optim.lr": [0.2]})
    with pytest.raises(ValueError, match=r"mask.density: expected a value in \(0, 1\]"):
        sweep.SweepSpec(base={"mask.density": 1.5}, grid={})


def test_validation_dataset_holds_out_part_of_train_only(sweep: ModuleType) -> None:
    from fedprune.data import load_dataset

    name = sweep.register_validation_dataset("digits")
    assert sweep.register_validation_dataset("digits") == name  # idempotent
    full, val = load_dataset("digits"), load_dataset(name)
    assert len(val.train) + len(val.test) == len(full.train)
    train_rows = {tuple(x.flatten().tolist()) for x in full.train.tensors[0]}
    assert all(tuple(x.flatten().tolist()) in train_rows for x in val.test.tensors[0])


def test_sweep_writes_rows_tables_and_resumes(
    sweep: ModuleType, counted: list[RunConfig], tmp_path: Path
) -> None:
    spec = sweep.SweepSpec(
        base=TINY,
        grid={"mask.strategy": ["none", "random"]},
        seeds=[0, 1],
        tune={"optim.lr": [0.1, 0.5]},
    )
    out = tmp_path / "sweep"
    rows = sweep.run_sweep(spec, out, progress=False)

    # 2 points x (2 candidates + 1 chosen) x 2 seeds
    assert spec.num_runs() == len(rows) == len(counted) == 12
    for name in ("results.csv", "results.json", "table.md", "accuracy_vs_epsilon.png"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "results.json").read_text())
    assert [r["run_id"] for r in saved] == [r["run_id"] for r in rows]
    assert (out / "results.csv").read_text().count("\n") == 13  # header + rows

    tune = [r for r in rows if r["phase"] == "tune"]
    final = [r for r in rows if r["phase"] == "final"]
    assert {r["eval_set"] for r in tune} == {"validation"}
    assert {r["eval_set"] for r in final} == {"test"}
    assert all(c.data.dataset == "digits-val" for c in counted[:4])
    for row in rows:
        assert {"mask.strategy", "optim.lr", "seed", "epsilon", "duration_s"} <= set(row)
        assert 0 <= row["test_accuracy"] <= 1
        assert row["epsilon"] == pytest.approx(2.0, rel=0.05)
        summary = json.loads((out / "runs" / row["run_id"] / "summary.json").read_text())
        assert summary["config"]["mask.strategy"] == row["mask.strategy"]
        assert summary["config"]["optim.lr"] == row["optim.lr"]
        holder = summary["holders"]["0"]
        assert row["noise_multiplier"] == holder["noise_multiplier"] > 0
        assert row["epsilon"] == summary["epsilon"] == holder["epsilon"]
        assert row["trained_density"] == pytest.approx(
            row["trained_coordinates"] / summary["total_coordinates"]
        )
        # The run's own ledger recorded exactly this run's steps.
        ledger = LedgerStore(out / "runs" / row["run_id"] / "ledger").open(
            f"{summary['config']['data.dataset']}-central", accountant="rdp", delta=1e-5
        )
        assert ledger.steps == holder["steps"]
        assert ledger.epsilon() == pytest.approx(row["epsilon"])
    assert {r["trained_coordinates"] for r in final if r["mask.strategy"] == "none"} == {26122}

    # The chosen lr per point is the candidate with the best mean validation accuracy.
    for strategy in ("none", "random"):
        means = {
            lr: sum(
                r["test_accuracy"]
                for r in tune
                if r["mask.strategy"] == strategy and r["optim.lr"] == lr
            )
            for lr in (0.1, 0.5)
        }
        chosen = {r["optim.lr"] for r in final if r["mask.strategy"] == strategy}
        assert chosen == {max(means, key=lambda lr: (means[lr], -lr))}

    table = (out / "table.md").read_text()
    assert "| none |" in table and "| random |" in table and "validation acc" in table

    # Rerunning the same sweep trains nothing and returns the same rows.
    assert sweep.run_sweep(spec, out, progress=False) == rows
    assert len(counted) == 12


def test_interrupted_sweep_loses_no_finished_run(
    sweep: ModuleType, counted: list[RunConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = sweep.SweepSpec(
        base=TINY, grid={"mask.strategy": ["none", "magnitude"]}, seeds=[0, 1, 2]
    )
    out = tmp_path / "sweep"
    counting = sweep.run_centralised

    def crash_on_fourth(config: RunConfig, **kwargs: Any) -> RunSummary:
        if len(counted) == 3:
            raise KeyboardInterrupt
        return counting(config, **kwargs)

    monkeypatch.setattr(sweep, "run_centralised", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(spec, out, progress=False)
    assert len(json.loads((out / "results.json").read_text())) == 3

    monkeypatch.setattr(sweep, "run_centralised", counting)
    rows = sweep.run_sweep(spec, out, progress=False)
    assert len(rows) == 6 and len(counted) == 6  # only the 3 missing runs ran
    assert len({r["run_id"] for r in rows}) == 6


def test_changed_base_config_is_a_new_run(
    sweep: ModuleType, counted: list[RunConfig], tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    spec = sweep.SweepSpec(base=TINY, grid={"mask.strategy": ["random"]})
    sweep.run_sweep(spec, out, progress=False)
    changed = sweep.SweepSpec(base={**TINY, "mask.density": 0.05}, grid=spec.grid)
    rows = sweep.run_sweep(changed, out, progress=False)
    assert len(counted) == 2
    assert rows[0]["trained_coordinates"] < 2612
    assert len(json.loads((out / "results.json").read_text())) == 2


def test_command_line_runs_a_sweep_from_a_toml_base(
    sweep: ModuleType, counted: list[RunConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "base.toml"
    base.write_text('"optim.epochs" = 1\n"warmup.epochs" = 1\n[privacy]\ntarget-epsilon = 2.0\n')
    out = tmp_path / "sweep"
    argv = ["--base", str(base), "--set", "mask.density=0.05", "--grid", "mask.scope=global,layer"]
    assert sweep.main([*argv, "--out", str(out), "--quiet"]) == 0
    assert [c.mask.scope for c in counted] == ["global", "layer"]
    assert {c.mask.density for c in counted} == {0.05}
    assert json.loads((out / "sweep.json").read_text())["grid"] == {
        "mask.scope": ["global", "layer"]
    }
    assert "| layer |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        sweep.main(["--grid", "mask.scope=everywhere", "--out", str(out)])


def test_resume_survives_new_config_keys_but_not_changed_values(
    sweep: ModuleType, counted: list[RunConfig], tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    spec = sweep.SweepSpec(base=TINY, grid={"mask.strategy": ["random"]})
    (row,) = sweep.run_sweep(spec, out, progress=False)
    summary_path = out / "runs" / row["run_id"] / "summary.json"
    summary = json.loads(summary_path.read_text())

    # A run written before fedprune added one key (now at its default) and removed another
    # still matches.
    del summary["config"][next(k for k in summary["config"] if k.startswith("federated."))]
    summary["config"]["secagg.removed-key"] = 3
    summary_path.write_text(json.dumps(summary))
    assert sweep.run_sweep(spec, out, progress=False) == [row]
    assert len(counted) == 1

    # A run made with another value of any key does not.
    summary["config"]["warmup.lr"] = 0.5
    summary_path.write_text(json.dumps(summary))
    (new,) = sweep.run_sweep(spec, out, progress=False)
    assert len(counted) == 2 and new["run_id"] == row["run_id"]  # same planned config
    # Run again from a fresh ledger: its epsilon is its own, not composed with the first run's.
    assert new["epsilon"] == pytest.approx(row["epsilon"])
