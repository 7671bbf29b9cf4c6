"""``benchmarks.federated.round_figures``: round walls from the summary, round 1 left out."""

from __future__ import annotations

import pytest

from benchmarks.federated import SLOTS, round_figures
from fedprune.summary import RoundRecord, RunSummary


def _summary(rows: list[RoundRecord]) -> RunSummary:
    return RunSummary(
        kind="federated", config={}, public_only_test_accuracy=0.5, total_coordinates=1, rounds=rows
    )


def test_walls_are_differences_of_elapsed_and_round_one_is_left_out() -> None:
    fits = {"0": 0.5, "1": 0.25, "2": 0.75}
    rows = [
        RoundRecord(round=1, elapsed_s=30.0, client_train_s={"0": 9.0}, client_fit_s={"0": 9.5}),
        RoundRecord(
            round=2, elapsed_s=32.0, client_train_s={"0": 0.4, "1": 0.5}, client_fit_s=fits
        ),
        RoundRecord(round=3, elapsed_s=33.0, client_train_s={"0": 0.5}, client_fit_s=fits),
        RoundRecord(round=4, elapsed_s=36.0),  # halted: no client times, not a measurement
    ]
    got = round_figures(_summary(rows))
    assert [p["round"] for p in got["per_round"]] == [1, 2, 3]
    assert [p["wall_s"] for p in got["per_round"]] == [30.0, 2.0, 1.0]
    assert got["wall_s"] == 1.5  # median of rounds 2 and 3
    assert got["slowest_train_s"] == 0.5
    assert got["bound_s"] == max(0.75, 1.5 / SLOTS)
    assert got["x_slowest"] == pytest.approx(3.0)


def test_a_run_where_no_client_trained_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no round reported client times"):
        round_figures(_summary([RoundRecord(round=1, elapsed_s=5.0)]))
