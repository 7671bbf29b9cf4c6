"""``fedprune compare`` end to end on a 2-cell digits preset: outputs, resume, failures."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import fedprune.compare.cells as cells_module
from fedprune.cli import main
from fedprune.compare import apply_sets, expand_cells, load_preset, run_compare
from fedprune.config import RunConfig
from fedprune.summary import RunSummary

MINI = """
[compare]
seeds = [0]
[base]
"data.dataset" = "digits"
"model" = "mlp"
"warmup.epochs" = 1
"optim.epochs" = 1
"optim.batch-size" = 256
[grid]
strategy = ["none", "random"]
density = [0.1, 1.0]   # random at density 1 is the dense cell again: dropped
epsilon = [2.0]
"""


@pytest.fixture
def preset_path(tmp_path: Path) -> Path:
    path = tmp_path / "mini.toml"
    path.write_text(MINI)
    return path


@pytest.fixture
def trained(monkeypatch: pytest.MonkeyPatch) -> list[RunConfig]:
    """Every config a centralised cell actually trains."""
    calls: list[RunConfig] = []
    real = cells_module.run_centralised

    def counting(config: RunConfig, **kwargs: Any) -> RunSummary:
        calls.append(config)
        return real(config, **kwargs)

    monkeypatch.setattr(cells_module, "run_centralised", counting)
    return calls


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open() as f:
        return list(csv.DictReader(f))


def test_mini_preset_end_to_end_then_resume_skips_done_cells(
    preset_path: Path, tmp_path: Path, trained: list[RunConfig]
) -> None:
    out = tmp_path / "out"
    assert main(["compare", str(preset_path), "--out", str(out), "--quiet"]) == 0
    assert len(trained) == 2
    rows = _rows(out)
    assert [(r["strategy"], r["density"]) for r in rows] == [("none", "1.0"), ("random", "0.1")]
    for row in rows:
        assert row["status"] == "ok" and row["seed"] == "0"
        assert 0 <= float(row["test_accuracy"]) <= 1
        assert float(row["epsilon"]) == pytest.approx(2.0, rel=0.05)
        assert row["total_epsilon"] == row["epsilon"]  # no tuning: the run's own
        assert float(row["wall_s"]) > 0
    for name in (
        "results.json",
        "report.md",
        "compare.json",
        "accuracy_vs_density.png",
        "accuracy_vs_epsilon.png",
        "public_shift.png",
        "upload_vs_accuracy.png",
        "accuracy_vs_total_epsilon.png",
    ):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "| centralised | none | in-distribution | 2 | random | freeze | 0.1 |" in report
    before = (out / "results.csv").read_bytes()

    # Same command again: nothing is trained, the CSV is unchanged.
    assert main(["compare", str(preset_path), "--out", str(out), "--quiet"]) == 0
    assert len(trained) == 2
    assert (out / "results.csv").read_bytes() == before

    # A new grid value runs only the new cell.
    argv = ["compare", str(preset_path), "--out", str(out), "--quiet"]
    assert main([*argv, "--set", "grid.epsilon=2.0,4"]) == 0
    assert len(trained) == 4 and {c.privacy.target_epsilon for c in trained[2:]} == {4.0}


def _preset(path: Path, *sets: str) -> Any:
    return apply_sets(load_preset(path), list(sets))


def test_interrupted_run_loses_only_the_cell_in_flight(
    preset_path: Path, tmp_path: Path, trained: list[RunConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    preset = _preset(preset_path, "seeds=0,1")
    out = tmp_path / "out"
    counting: Callable[..., RunSummary] = cells_module.run_centralised

    def interrupt_third(config: RunConfig, **kwargs: Any) -> RunSummary:
        if len(trained) == 2:
            trained.append(config)
            raise KeyboardInterrupt
        return counting(config, **kwargs)

    monkeypatch.setattr(cells_module, "run_centralised", interrupt_third)
    with pytest.raises(KeyboardInterrupt):
        run_compare(preset, out, progress=False)
    saved = json.loads((out / "results.json").read_text())
    assert len(saved) == 2 and {r["status"] for r in saved} == {"ok"}

    monkeypatch.setattr(cells_module, "run_centralised", counting)
    rows = run_compare(preset, out, progress=False)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    # Cells 1-2 were not trained again: 2 before the interrupt, 1 interrupted, 2 after.
    assert len(trained) == 5
    done_first = {r["cell"] for r in saved}
    assert {Path(c.out_dir).name for c in trained[3:]}.isdisjoint(done_first)


def test_failing_cell_is_recorded_and_the_rest_go_on(
    preset_path: Path, tmp_path: Path, trained: list[RunConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    counting: Callable[..., RunSummary] = cells_module.run_centralised

    def dense_fails(config: RunConfig, **kwargs: Any) -> RunSummary:
        if config.mask.strategy == "none":
            raise RuntimeError("disk on fire")
        return counting(config, **kwargs)

    monkeypatch.setattr(cells_module, "run_centralised", dense_fails)
    out = tmp_path / "out"
    assert main(["compare", str(preset_path), "--out", str(out), "--quiet"]) == 1
    rows = {r["strategy"]: r for r in _rows(out)}
    assert rows["none"]["status"] == "failed"
    assert rows["none"]["error"] == "RuntimeError: disk on fire"
    assert rows["random"]["status"] == "ok"
    assert "disk on fire" in (out / "report.md").read_text()

    # The next invocation retries only the failed cell.
    monkeypatch.setattr(cells_module, "run_centralised", counting)
    assert main(["compare", str(preset_path), "--out", str(out), "--quiet"]) == 0
    assert [c.mask.strategy for c in trained] == ["random", "none"]


def test_expand_cells_normalises_dense_and_dedupes(preset_path: Path, tmp_path: Path) -> None:
    preset = _preset(preset_path, "grid.mode=freeze,select", "grid.density=0.1,0.01,1")
    cells = expand_cells(preset, tmp_path)
    dense = [c for c in cells if c.config.mask.strategy == "none"]
    assert len(dense) == 1 and dense[0].config.mask.density == 1.0
    assert dense[0].config.mask.mode == "freeze"
    sparse = {(c.config.mask.mode, c.config.mask.density) for c in cells} - {("freeze", 1.0)}
    assert sparse == {(m, d) for m in ("freeze", "select") for d in (0.1, 0.01)}
    assert len({c.key for c in cells}) == len(cells) == 5


def test_bad_presets_fail_at_start_with_one_line(tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "bad.toml"
    for text, message in (
        ('[grid]\nstrategy = ["magic"]\n', "mask.strategy"),
        ('[grid]\nsetting = ["moon"]\n', "unknown setting 'moon'"),
        ('[grid]\ntuning = ["public"]\n', "no candidates"),
        ('[grid]\ntuning = ["private"]\n[tuning]\n"optim.batch-size" = [8]\n', "may only vary"),
        ("[gird]\n", "unknown tables"),
    ):
        bad.write_text(text)
        with pytest.raises(SystemExit) as exit_info:
            main(["compare", str(bad), "--out", str(tmp_path / "o"), "--quiet"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("fedprune: error: ") and message in err, err
    with pytest.raises(SystemExit):
        main(["compare", str(tmp_path / "missing.toml")])
    assert "not found" in capsys.readouterr().err
