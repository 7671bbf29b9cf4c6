"""Every public name of fedprune.activation imports."""

import importlib

import fedprune.activation


def test_every_all_name_imports() -> None:
    for name in fedprune.activation.__all__:
        assert getattr(fedprune.activation, name) is not None
    for module in (
        "cli",
        "epsilon",
        "inversion",
        "layers",
        "metrics",
        "noise",
        "perturbation",
        "plots",
        "sensitivity",
        "study",
    ):
        mod = importlib.import_module(f"fedprune.activation.{module}")
        for name in mod.__all__:
            assert hasattr(mod, name), f"{module}.{name}"
