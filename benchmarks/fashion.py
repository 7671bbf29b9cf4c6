"""The issue's headline case: centralised DP-SGD of the CNN on Fashion-MNIST, dense vs 10 %.

epsilon = 3 (delta = 1e-5, RDP), Poisson batches of expected size 64, C = 1, lr = 0.5; the
noise is calibrated for the epochs actually run. Wall time of ``train_dp_sgd`` (whole run,
including setup) for: dense with the reference engine (the code before the fast path: "dense
today"), dense with the fast engine, and a random 10 % mask (``freeze`` mode) with the fast
engine, plus test accuracy after training as a sanity check (one short run, no warm-up).
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import Subset

from fedprune.data import load_dataset
from fedprune.masks import ParameterMask
from fedprune.models import create_model
from fedprune.privacy import DPPlan
from fedprune.training.dp_sgd import Engine, train_dp_sgd
from fedprune.training.loops import evaluate


def run(*, epochs: float, data_dir: str, batch: int = 64) -> list[dict[str, object]]:
    bundle = load_dataset("fashion-mnist", data_dir=data_dir)
    train = bundle.train
    n = len(train)
    sample_rate = batch / n
    steps = max(1, round(epochs / sample_rate))
    plan = DPPlan.calibrate(
        target_epsilon=3.0,
        delta=1e-5,
        sample_rate=sample_rate,
        steps=steps,
        max_grad_norm=1.0,
        accountant="rdp",
    )
    test = Subset(bundle.test, range(2000))
    configs: list[tuple[str, float, Engine]] = [
        ("dense", 1.0, "reference"),
        ("dense", 1.0, "fast"),
        ("freeze", 0.1, "fast"),
    ]
    rows: list[dict[str, object]] = []
    for mode, density, engine in configs:
        torch.manual_seed(0)
        model = create_model("cnn", input_shape=bundle.input_shape, num_classes=bundle.num_classes)
        mask = None
        if density < 1.0:
            gen = torch.Generator().manual_seed(1)
            mask = ParameterMask(
                {
                    k: torch.rand(p.shape, generator=gen) < density
                    for k, p in model.named_parameters()
                }
            )
        start = time.perf_counter()
        result = train_dp_sgd(model, train, plan=plan, lr=0.5, mask=mask, engine=engine)
        wall = time.perf_counter() - start
        acc = evaluate(model, test).accuracy
        rows.append(
            {
                "model": "cnn",
                "dataset": "fashion-mnist",
                "mode": mode,
                "density": density,
                "engine": engine,
                "epochs": epochs,
                "steps": steps,
                "noise_multiplier": plan.noise_multiplier,
                "epsilon": result.epsilon,
                "wall_s": wall,
                "test_accuracy": acc,
            }
        )
    return rows
