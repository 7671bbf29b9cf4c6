"""experiments/federated_compare.py on fake summaries: plan, resume, rows, table, plot (no Ray)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fedprune.config import RunConfig
from fedprune.privacy.policy import default_ledger_dir
from fedprune.summary import RunSummary
from server.simulation import simulated_node_policy

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
CONF = EXPERIMENTS / "conf" / "digits"


@pytest.fixture(scope="module")
def fc() -> ModuleType:
    sys.path.insert(0, str(EXPERIMENTS))  # the script imports its sibling ``sweep``
    try:
        spec = importlib.util.spec_from_file_location(
            "federated_compare", EXPERIMENTS / "federated_compare.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["federated_compare"] = module  # dataclasses resolve annotations here
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXPERIMENTS))
    return module


def _spec(fc: ModuleType, **kwargs: Any) -> Any:
    settings = [
        fc.Setting("sparse", {"mask.strategy": "magnitude", "mask.density": 0.1}),
        fc.Setting("dense", {"mask.strategy": "none", "mask.density": 1.0}),
    ]
    defaults: dict[str, Any] = {
        "settings": settings,
        "base": {"federated.num-rounds": 3},
        "grid": {"privacy.target-epsilon": [4.0, 2.0]},
        "seeds": [0, 1],
        "pairs": [("sparse", "dense")],
    }
    return fc.CompareSpec(**{**defaults, **kwargs})


def _fake_summary(run: Any, *, rounds: int | None = None) -> dict[str, Any]:
    """A summary shaped like the server's, with accuracy set by setting, epsilon and seed."""
    n = run.config.federated.num_rounds if rounds is None else rounds
    final = (0.9 if run.setting == "sparse" else 0.8) - 0.01 * run.varied["seed"]
    final -= 0.05 * (run.config.privacy.target_epsilon < 4)
    curve = [0.7 + (final - 0.7) * (t + 1) / n for t in range(n)]
    return {
        "test_accuracy": curve[-1],
        "public_only_test_accuracy": 0.7,
        "rounds_completed": n,
        "trained_coordinates": 100 if run.setting == "sparse" else 1000,
        "total_coordinates": 1000,
        "duration_s": 12.0,
        "rounds": [
            {"round": t + 1, "test_accuracy": a, "test_loss": 1 - a} for t, a in enumerate(curve)
        ],
        "holders": {
            "0": {"epsilon": 3.9, "noise_multiplier": 1.1},
            "1": {"epsilon": 3.95, "noise_multiplier": 1.1},
        },
        "config": run.config.to_flat(),
    }


def _fake_launcher(calls: list[Any]) -> Any:
    def launch(run: Any, timeout_s: float) -> None:
        calls.append(run)
        run.out_dir.mkdir(parents=True, exist_ok=True)
        (run.out_dir / "summary.json").write_text(json.dumps(_fake_summary(run)))

    return launch


def test_load_setting_names_after_stem(fc: ModuleType) -> None:
    setting = fc.load_setting(CONF / "federated_shifted_dense.toml")
    assert setting.name == "shifted-dense"
    assert setting.overrides["mask.strategy"] == "none"
    assert setting.overrides["data.public-classes"] == "0,1,2,3,4"


def test_every_federated_override_file_resolves(fc: ModuleType, tmp_path: Path) -> None:
    settings = [fc.load_setting(p) for p in sorted(CONF.glob("federated_*.toml"))]
    assert len(settings) >= 5
    runs = fc.CompareSpec(settings=settings).plan(tmp_path)
    assert len({r.run_id for r in runs}) == len(settings)


def test_plan_covers_settings_points_seeds_with_stable_distinct_dirs(
    fc: ModuleType, tmp_path: Path
) -> None:
    spec = _spec(fc)
    runs = spec.plan(tmp_path)
    assert len(runs) == 2 * 2 * 2
    assert len({r.out_dir for r in runs}) == len(runs)
    assert [r.run_id for r in runs] == [r.run_id for r in spec.plan(tmp_path)]
    first = runs[0]
    assert first.setting == "sparse" and first.varied == {"privacy.target-epsilon": 4.0, "seed": 0}
    assert first.config.federated.num_rounds == 3  # base override
    assert first.config.mask.strategy == "magnitude"  # setting override
    assert first.run_id.startswith("sparse-")
    assert first.out_dir.parent == (tmp_path / "runs").resolve()


def test_setting_overrides_win_over_base_and_grid_over_setting(
    fc: ModuleType, tmp_path: Path
) -> None:
    spec = fc.CompareSpec(
        settings=[fc.Setting("s", {"optim.lr": 0.1, "mask.density": 0.2})],
        base={"optim.lr": 0.5},
        grid={"mask.density": [0.05]},
    )
    (run,) = spec.plan(tmp_path)
    assert run.config.optim.lr == 0.1
    assert run.config.mask.density == 0.05


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"settings": []}, "at least one setting"),
        ({"seeds": []}, "at least one seed"),
        ({"grid": {"seed": [1]}}, "set by the comparison"),
        ({"grid": {"optim.lr": []}}, "at least one value"),
        ({"pairs": [("sparse", "nope")]}, "unknown settings \\['nope'\\]"),
    ],
)
def test_spec_rejects_bad_input(fc: ModuleType, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _spec(fc, **kwargs)


def test_unknown_override_key_fails_at_plan(fc: ModuleType, tmp_path: Path) -> None:
    spec = _spec(fc, base={"mask.densty": 0.1})
    with pytest.raises(ValueError, match=r"mask\.densty"):
        spec.plan(tmp_path)


def test_completed_summary_needs_every_round(fc: ModuleType, tmp_path: Path) -> None:
    run = _spec(fc).plan(tmp_path)[0]
    assert fc.completed_summary(run) is None
    run.out_dir.mkdir(parents=True)
    (run.out_dir / "summary.json").write_text(json.dumps(_fake_summary(run, rounds=2)))
    assert fc.completed_summary(run) is None  # the server checkpoints after every round
    (run.out_dir / "summary.json").write_text(json.dumps(_fake_summary(run)))
    assert fc.completed_summary(run)["rounds_completed"] == 3


def test_completed_summary_reruns_when_the_config_changed(fc: ModuleType, tmp_path: Path) -> None:
    run = _spec(fc).plan(tmp_path)[0]
    run.out_dir.mkdir(parents=True)
    summary = _fake_summary(run)
    summary["config"]["optim.lr"] = 0.123  # e.g. the app default changed since the run
    (run.out_dir / "summary.json").write_text(json.dumps(summary))
    assert fc.completed_summary(run) is None
    summary["config"] = {**_fake_summary(run)["config"], "retired.option": 1}
    del summary["config"]["privacy.delta"]  # an option added since: not compared
    summary["config"]["out-dir"] = "/elsewhere"  # moved runs keep their results
    (run.out_dir / "summary.json").write_text(json.dumps(summary))
    assert fc.completed_summary(run) is not None


def test_defaults_are_the_one_default_table(fc: ModuleType) -> None:
    assert fc.default_table() == RunConfig().to_flat()
    assert "privacy.secure-noise" not in fc.default_table()
    assert "privacy.ledger-dir" not in fc.default_table()


def test_run_dirs_survive_new_app_defaults(
    fc: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(fc)
    before = [r.run_id for r in spec.plan(tmp_path)]
    defaults = fc.default_table()
    monkeypatch.setattr(fc, "default_table", lambda: {**defaults, "optim.momentum": 0.0})
    assert [r.run_id for r in spec.plan(tmp_path)] == before


def test_child_run_gives_its_nodes_a_ledger_dir_of_its_own(
    fc: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Research runs never compose with each other through the persistent default ledgers."""
    import server.simulation

    run = _spec(fc).plan(tmp_path)[0]
    run.out_dir.mkdir(parents=True)
    (run.out_dir / "overrides.json").write_text(json.dumps(run.overrides))
    seen: list[Any] = []

    def fake_run_federated(overrides: dict[str, Any], *, policy: Any, progress: bool) -> Any:
        seen.append((overrides, policy))
        return RunSummary.from_dict(_fake_summary(run) | {"kind": "federated", "holders": {}})

    monkeypatch.setattr(server.simulation, "run_federated", fake_run_federated)
    assert fc._run_one(run.out_dir) == 0
    ((overrides, policy),) = seen
    assert overrides == run.overrides
    assert Path(policy.ledger_dir) == (run.out_dir / "ledgers").resolve() == run.ledger_dir
    assert policy.ledger_path != default_ledger_dir()
    assert policy == simulated_node_policy(run.config, ledger_dir=str(run.ledger_dir))


def test_summary_row_flattens_metrics_and_config(fc: ModuleType, tmp_path: Path) -> None:
    run = _spec(fc).plan(tmp_path)[1]  # sparse, epsilon 4, seed 1
    row = fc.summary_row(run, _fake_summary(run))
    assert row["setting"] == "sparse" and row["seed"] == 1
    assert row["privacy.target-epsilon"] == 4.0
    assert row["mask.strategy"] == "magnitude" and row["secagg.enabled"] is True
    assert row["epsilon"] == pytest.approx(3.95)  # the largest per-client epsilon
    assert row["gain"] == pytest.approx(0.89 - 0.7)
    assert len(row["round_accuracy"]) == 3
    assert row["wall_s"] is None  # no launcher record


def test_run_compare_writes_outputs_and_resumes(fc: ModuleType, tmp_path: Path) -> None:
    spec = _spec(fc)
    calls: list[Any] = []
    rows = fc.run_compare(spec, tmp_path, launch=_fake_launcher(calls))
    assert len(calls) == len(rows) == 8
    for name in ("results.csv", "results.json", "table.md", "accuracy_per_round.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert len(json.loads((tmp_path / "results.json").read_text())) == 8
    csv_header = (tmp_path / "results.csv").read_text().splitlines()[0]
    assert "round_accuracy" not in csv_header and "test_accuracy" in csv_header

    # A partial summary (interrupted run) is run again; complete ones are skipped.
    partial = spec.plan(tmp_path)[5]
    (partial.out_dir / "summary.json").write_text(json.dumps(_fake_summary(partial, rounds=1)))
    calls.clear()
    again = fc.run_compare(spec, tmp_path, launch=_fake_launcher(calls))
    assert [c.run_id for c in calls] == [partial.run_id]
    assert again == rows


def test_failed_run_is_left_out_and_named(fc: ModuleType, tmp_path: Path) -> None:
    spec = _spec(fc, grid={}, seeds=[0])
    good = _fake_launcher([])

    def launch(run: Any, timeout_s: float) -> None:
        if run.setting == "dense":
            raise RuntimeError(f"run {run.run_id} exited with 1")
        good(run, timeout_s)

    rows = fc.run_compare(spec, tmp_path, launch=launch)
    assert [r["setting"] for r in rows] == ["sparse"]
    table = (tmp_path / "table.md").read_text()
    assert "Failed runs (left out): dense-" in table


def test_table_means_and_paired_differences(fc: ModuleType, tmp_path: Path) -> None:
    spec = _spec(fc)
    rows = [fc.summary_row(r, _fake_summary(r)) for r in spec.plan(tmp_path)]
    table = fc.format_table(spec, rows)
    lines = table.splitlines()
    # sparse at epsilon 4: seeds 0 and 1 give 90 and 89 -> 89.5 ± 0.7; gain 19.5.
    sparse4 = next(li for li in lines if li.startswith("| sparse | 4 |"))
    assert "| 89.5 ± 0.7 | 70.0 ± 0.0 | 19.5 ± 0.7 | 0.105 | 3.95 | 100 | - | 2 |" in sparse4
    dense2 = next(li for li in lines if li.startswith("| dense | 2 |"))
    assert "| none | 1 |" in dense2  # strategy none trains everything: density 1
    diffs = fc.paired_differences(spec, rows)
    assert [(d["privacy.target-epsilon"], d["n"], d["wins"]) for d in diffs] == [
        (4.0, 2, 2),
        (2.0, 2, 2),
    ]
    assert diffs[0]["mean"] == pytest.approx(10.0)
    assert diffs[0]["std"] == pytest.approx(0.0, abs=1e-9)
    assert "| sparse − dense | 4 | +10.0 ± 0.0 | 2/2 | 2 |" in table


def test_paired_differences_use_common_seeds_only(fc: ModuleType, tmp_path: Path) -> None:
    spec = _spec(fc, grid={})
    rows = [fc.summary_row(r, _fake_summary(r)) for r in spec.plan(tmp_path)]
    rows = [r for r in rows if not (r["setting"] == "dense" and r["seed"] == 1)]
    (diff,) = fc.paired_differences(spec, rows)
    assert diff["n"] == 1 and diff["std"] == 0.0


def test_plot_handles_single_seed_and_missing_rounds(fc: ModuleType, tmp_path: Path) -> None:
    spec = _spec(fc, seeds=[0], grid={})
    rows = [fc.summary_row(r, _fake_summary(r)) for r in spec.plan(tmp_path)]
    rows[1]["round_accuracy"][1] = None  # e.g. a round without evaluation: skipped, not a crash
    path = tmp_path / "plot.png"
    fc.plot_rounds(spec, rows, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_line_builds_the_spec(fc: ModuleType) -> None:
    args = fc.build_parser().parse_args(
        [
            "--setting",
            str(CONF / "federated_magnitude.toml"),
            "--setting",
            str(CONF / "federated_dense.toml"),
            "--set",
            "secagg.enabled=false",
            "--grid",
            "optim.lr=0.1,0.2",
            "--seeds",
            "0,1",
            "--pair",
            "magnitude:dense",
            "--out",
            "x",
        ]
    )
    spec = fc.spec_from_args(args)
    assert [s.name for s in spec.settings] == ["magnitude", "dense"]
    assert spec.base == {"secagg.enabled": False}
    assert spec.grid == {"optim.lr": [0.1, 0.2]}
    assert spec.seeds == [0, 1] and spec.pairs == [("magnitude", "dense")]
    with pytest.raises(ValueError, match="expected A:B"):
        fc.spec_from_args(fc.build_parser().parse_args(["--pair", "magnitude", "--out", "x"]))
