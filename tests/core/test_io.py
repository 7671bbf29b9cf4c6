"""``fedprune.io``: strict JSON with non-finite floats as null, and atomic CSV writes."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import IO

import pytest

from fedprune.io import atomic_write, read_json, write_csv, write_json


def test_write_json_maps_non_finite_to_null(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.json"
    write_json(path, {"eps": math.inf, "acc": 0.5, "curve": (math.nan, 1.0)})
    assert "Infinity" not in path.read_text() and "NaN" not in path.read_text()
    assert read_json(path) == {"eps": None, "acc": 0.5, "curve": [None, 1.0]}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary file left


def test_write_csv_writes_header_rows_and_ignores_extras_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    rows = [{"a": 1, "b": "x,y"}, {"a": 2, "curve": [1, 2]}]
    write_csv(path, rows, ["a", "b"], extrasaction="ignore")
    with path.open(newline="") as f:
        assert list(csv.DictReader(f)) == [{"a": "1", "b": "x,y"}, {"a": "2", "b": ""}]
    with pytest.raises(ValueError, match="curve"):
        write_csv(path, rows, ["a", "b"])
    assert path.read_text().splitlines()[0] == "a,b"  # the failed write left the old file
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_atomic_write_keeps_the_old_file_when_the_callback_fails(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"old": True}))

    def fail(f: IO[bytes]) -> None:
        f.write(b"{torn")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        atomic_write(path, fail)
    assert read_json(path) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_write_torch_round_trips_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    import torch

    from fedprune.io import write_torch

    path = tmp_path / "m" / "state.pt"
    write_torch(path, {"w": torch.arange(3.0)})
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3.0))
    assert [p.name for p in path.parent.iterdir()] == ["state.pt"]
