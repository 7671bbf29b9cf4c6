"""The public API of ``fedprune.data``: every exported name imports, and no Flower dependency."""

from __future__ import annotations

import subprocess
import sys

import fedprune.data


def test_every_exported_name_is_importable() -> None:
    assert sorted(fedprune.data.__all__) == fedprune.data.__all__
    for name in fedprune.data.__all__:
        assert getattr(fedprune.data, name) is not None, name


def test_data_package_does_not_import_flwr() -> None:
    code = "import sys, fedprune.data; sys.exit('flwr' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
