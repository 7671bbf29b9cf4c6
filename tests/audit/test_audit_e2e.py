"""End to end on digits: non-private training leaks more than DP; no bound beats the accountant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedprune.audit import AuditSettings, run_audit
from fedprune.cli import main

# Generous: the runs take about a minute alone, far longer on a shared, loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def test_non_private_training_leaks_more_than_dp_and_no_bound_exceeds_epsilon(
    nonprivate_run: Path, dp_run: Path
) -> None:
    settings = AuditSettings(references=0, canaries=100, seed=0)
    open_report = run_audit(nonprivate_run, settings)
    dp_report = run_audit(dp_run, settings)
    assert open_report.accountant_epsilon is None and not open_report.private
    assert dp_report.accountant_epsilon == pytest.approx(1.0, abs=0.01)
    open_canary = next(a for a in open_report.attacks if a.population == "canary")
    dp_canary = next(a for a in dp_report.attacks if a.population == "canary")
    # Memorised noise canaries are near-perfectly separable without DP, barely with it.
    assert open_canary.auc > 0.85
    assert open_canary.auc > dp_canary.auc + 0.2
    assert open_report.max_lower_bound > dp_report.max_lower_bound + 0.5
    assert dp_report.max_lower_bound <= dp_report.accountant_epsilon
    assert {a.name for a in dp_report.attacks} == {"loss", "canary (100)"}


def test_cli_writes_json_and_log_log_roc_and_prints_the_table(
    nonprivate_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "audit"
    code = main(
        [
            "audit",
            str(nonprivate_run),
            "--references",
            "2",
            "--canaries",
            "0",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "audit.json").read_text())
    names = [a["name"] for a in report["attacks"]]
    assert names == ["loss", "lira (2 ref.)"]
    lira = report["attacks"][1]
    assert lira["num_members"] == 1293 and lira["num_nonmembers"] == 360
    assert 0.0 <= lira["auc"] <= 1.0 and lira["tpr_at_fpr"]["0.001"] is None  # < 1000 non-m.
    assert report["max_lower_bound"] == max(a["bound"]["epsilon"] for a in report["attacks"])
    assert (out / "audit_roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "lira (2 ref.)" in printed and "eps_lb" in printed
    assert not (nonprivate_run / "audit.json").exists()  # --out was honoured
