"""The activation-privacy study: pruning one layer vs explicit noise against an inversion attack.

Protocol (all on one dataset, one seed):

1. Split the train set into public and private records (stratified, ``public_fraction``); train the
   classifier on the public records only, so private records reach no model or inverter except
   through their activations.
2. For the chosen layer: bound its input by interval propagation of the ``[0, 1]`` input domain and
   compute its output sensitivity (:mod:`fedprune.activation.sensitivity`).
3. For each keep-fraction ``k``: magnitude-prune the layer (one shot, no fine-tuning), measure the
   activation perturbation on the private records, fit Laplace/Gaussian laws and report the
   equivalent epsilons; calibrate Laplace and Gaussian noise on the unpruned layer's output to the
   pruned model's test accuracy.
4. Attack every setting (no protection, pruning, matched Laplace, matched Gaussian) with a decoder
   trained on public data released through the same mechanism, and score reconstructions of the
   private records (MSE, SSIM).

Privacy scope: this is about what the holder of a layer's activations can learn about the input
behind them (activation privacy), not record-level differential privacy of training data.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from fedprune.activation.epsilon import MechanismEpsilon, mechanism_epsilon
from fedprune.activation.inversion import (
    Inverter,
    Perturb,
    ReconstructionQuality,
    reconstruct,
    reconstruction_quality,
    train_inverter,
)
from fedprune.activation.layers import capture_layer_io, default_layer_name, get_affine_layer
from fedprune.activation.noise import Mechanism, calibrate_noise_scale, unit_noise
from fedprune.activation.perturbation import (
    PerturbationStats,
    activation_perturbation,
    measure_perturbation,
    prune_model_layer,
)
from fedprune.activation.plots import (
    plot_perturbation_fits,
    plot_reconstruction_grid,
    plot_tradeoff,
)
from fedprune.activation.sensitivity import (
    InputBox,
    Sensitivity,
    affine_jacobian,
    affine_sensitivity,
    layer_input_box,
)
from fedprune.data import load_dataset, split_public_private
from fedprune.io import to_jsonable, write_csv, write_json
from fedprune.models import create_model
from fedprune.training import evaluate, train_sgd

__all__ = [
    "ActivationPrivacyConfig",
    "ActivationPrivacyResult",
    "PruningReport",
    "SettingResult",
    "results_dict",
    "run_activation_privacy",
    "save_activation_privacy",
]

logger = logging.getLogger(__name__)

Protection = Literal["none", "pruning", "laplace", "gaussian"]
MECHANISMS: tuple[Mechanism, ...] = ("laplace", "gaussian")
INPUT_LOW, INPUT_HIGH = 0.0, 1.0  # the DatasetBundle contract: pixels scaled to [0, 1]

THREAT_MODEL = (
    "The attacker holds the chosen layer's output (pre-activation W u + b) for each private "
    "record, knows the deployed model (the pruned one, when pruned) and the noise mechanism and "
    "scale, and has public records from the same distribution. It trains a decoder on public "
    "records passed through the same release (fresh noise every batch for the noise mechanisms) "
    "and decodes the private records' activations (the adapted attack, recon_* columns). Private "
    "records were never used to train the classifier or the decoder. For contrast, the unadapted "
    "attack (unadapted_* columns) decodes every release with the decoder trained on the "
    "unprotected release, i.e. an attacker who ignores the protection."
)

CAVEATS = (
    "Activation privacy is not record-level differential privacy: nothing here bounds what the "
    "trained model reveals about its training records; it concerns what the holder of one input's "
    "activations can infer about that input.",
    "Pruning adds no randomness: the perturbation e = (W - W_k) u is a deterministic function of "
    "the input, and an attacker who knows the pruned model sees exactly W_k u + b. The 'equivalent "
    "epsilon' of pruning is the epsilon a Laplace/Gaussian mechanism with the fitted scale would "
    "have (the analogy of Huang et al. 2020), not a differential-privacy guarantee of pruning.",
    "The fits pool all coordinates of e over examples and output units as if i.i.d.; they are not: "
    "e depends on the input and its scale differs between units.",
    "The sensitivities are worst cases over the whole input box, so the epsilons are large; they "
    "are meaningful as comparisons, not as reassuring values.",
    "The classical Gaussian-mechanism formula holds only for epsilon < 1; values >= 1 are reported "
    "for reference and flagged, and the analytic Gaussian mechanism (valid at any epsilon) is "
    "reported beside them.",
    "The explicit noise rows are formal (epsilon, delta) guarantees for releasing one input's "
    "activations (fresh noise, stated sensitivity), again about that input and not training data.",
    "One seed, one small dataset, one attack (a learned MLP decoder). A poor reconstruction shows "
    "that this attack failed, not that no attack succeeds.",
)


@dataclass(frozen=True)
class ActivationPrivacyConfig:
    """Settings of one study run (written as ``config.json``).

    Attributes
    ----------
    dataset, data_dir:
        Passed to :func:`fedprune.data.load_dataset`; inputs must lie in ``[0, 1]``.
    model:
        Registry name for :func:`fedprune.models.create_model`.
    layer:
        Name of an ``nn.Linear``/``nn.Conv2d`` module to prune and attack; ``None`` picks the first.
    keep_fractions:
        Fractions ``k`` in (0, 1) of the layer's weights kept by magnitude pruning.
    public_fraction:
        Share of the train set that is public (classifier and decoder training); the rest is
        private.
    epochs, lr, batch_size:
        Non-private SGD of the classifier on the public records.
    inverter_epochs, inverter_lr, inverter_hidden:
        Decoder training (Adam on MSE) on the public records.
    noise_repeats:
        Noise draws averaged per accuracy evaluation when calibrating noise to an accuracy.
    delta:
        Delta of the Gaussian mechanism's (epsilon, delta).
    grid_examples:
        Private records shown in the reconstruction grid (one per class first, then in order).
    seed:
        Seeds the split, the classifier, the decoders and the noise.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    model: str = "mlp"
    layer: str | None = None
    keep_fractions: tuple[float, ...] = (0.3, 0.1, 0.05, 0.02, 0.01)
    public_fraction: float = 0.5
    epochs: int = 40
    lr: float = 0.05
    batch_size: int = 64
    inverter_epochs: int = 150
    inverter_lr: float = 1e-3
    inverter_hidden: int = 512
    noise_repeats: int = 3
    delta: float = 1e-5
    grid_examples: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.keep_fractions:
            raise ValueError("expected at least one keep fraction")
        for k in self.keep_fractions:
            if not 0.0 < k < 1.0:
                raise ValueError(f"expected keep fractions in (0, 1), got {k}")
        if len(set(self.keep_fractions)) != len(self.keep_fractions):
            raise ValueError(f"expected distinct keep fractions, got {list(self.keep_fractions)}")
        if not 0.0 < self.public_fraction < 1.0:
            raise ValueError(f"expected public_fraction in (0, 1), got {self.public_fraction}")
        if not 0.0 < self.delta < 1.0:
            raise ValueError(f"expected delta in (0, 1), got {self.delta}")
        for name in ("epochs", "batch_size", "inverter_epochs", "inverter_hidden", "noise_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"expected {name} >= 1, got {getattr(self, name)}")
        for name in ("lr", "inverter_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"expected {name} > 0, got {getattr(self, name)}")
        if self.grid_examples < 1:
            raise ValueError(f"expected grid_examples >= 1, got {self.grid_examples}")


@dataclass(frozen=True)
class _AttackOutcome:
    """Adapted and unadapted attack quality on one release, and the grid's reconstructions."""

    adapted: ReconstructionQuality
    unadapted: ReconstructionQuality
    grid_reconstructions: torch.Tensor


@dataclass(frozen=True)
class SettingResult:
    """One attacked release of the layer's activations.

    Attributes
    ----------
    protection:
        ``none`` (unpruned, no noise), ``pruning``, or ``laplace``/``gaussian`` noise on the
        unpruned layer calibrated to the test accuracy of pruning at ``keep_fraction``.
    keep_fraction:
        The pruning level (1.0 for ``none``).
    scale:
        Noise scale (Laplace ``b`` or Gaussian ``σ``); for pruning the Laplace fit's ``b``.
    noise_std:
        Per-coordinate standard deviation of the perturbation (measured for pruning).
    test_accuracy:
        Test accuracy of the released model (noise rows: mean over calibration draws).
    recon_mse, recon_ssim:
        Quality of the adapted attack on the private records (mean per image): a decoder trained
        on public data released through this same protection.
    unadapted_mse, unadapted_ssim:
        The same for the unadapted attack: the decoder trained on the *unprotected* release,
        applied to this release (an attacker who ignores the protection; weaker).
    epsilon_whole_input, epsilon_one_coordinate:
        Laplace: ``Δ1 / b``; Gaussian: analytic mechanism at ``delta``; pruning: the *equivalent*
        Laplace epsilon of the fitted ``b`` (an analogy, no guarantee); ``None`` for ``none``.
    epsilon_basis:
        What the epsilon columns mean, in words.
    """

    protection: Protection
    keep_fraction: float
    scale: float
    noise_std: float
    test_accuracy: float
    recon_mse: float
    recon_ssim: float
    unadapted_mse: float
    unadapted_ssim: float
    epsilon_whole_input: float | None
    epsilon_one_coordinate: float | None
    epsilon_basis: str

    @classmethod
    def of(
        cls,
        protection: Protection,
        keep_fraction: float,
        scale: float,
        noise_std: float,
        test_accuracy: float,
        outcome: _AttackOutcome,
        epsilon: MechanismEpsilon | None,
        epsilon_basis: str,
    ) -> SettingResult:
        """Assemble a row from an attack outcome and the release's epsilon (if any)."""
        return cls(
            protection=protection,
            keep_fraction=keep_fraction,
            scale=scale,
            noise_std=noise_std,
            test_accuracy=test_accuracy,
            recon_mse=outcome.adapted.mse,
            recon_ssim=outcome.adapted.ssim,
            unadapted_mse=outcome.unadapted.mse,
            unadapted_ssim=outcome.unadapted.ssim,
            epsilon_whole_input=None if epsilon is None else epsilon.whole_input,
            epsilon_one_coordinate=None if epsilon is None else epsilon.one_coordinate,
            epsilon_basis=epsilon_basis,
        )


@dataclass(frozen=True)
class PruningReport:
    """Pruning at one keep-fraction: perturbation statistics and equivalent epsilons.

    ``equivalent_laplace``/``equivalent_gaussian`` are the epsilons noise of the fitted scales would
    give: an analogy (pruning is deterministic), not a guarantee.
    """

    perturbation: PerturbationStats
    equivalent_laplace: MechanismEpsilon
    equivalent_gaussian: MechanismEpsilon
    test_accuracy: float


@dataclass
class ActivationPrivacyResult:
    """Everything the study measured; :func:`save_activation_privacy` writes it to disk.

    ``grid_rows`` holds ``(label, reconstructions)`` of the ``grid_originals`` private records.
    """

    config: ActivationPrivacyConfig
    layer: str
    layer_summary: dict[str, Any]
    data_summary: dict[str, Any]
    input_box: InputBox
    sensitivity: Sensitivity
    base_accuracy: float
    mean_image: ReconstructionQuality
    settings: list[SettingResult]
    pruning: list[PruningReport]
    assumptions: list[str]
    caveats: list[str]
    grid_originals: torch.Tensor
    grid_rows: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    perturbation_samples: list[torch.Tensor] = field(default_factory=list)
    seconds: float = 0.0


def _assumptions(
    config: ActivationPrivacyConfig, layer: str, box: InputBox, sens: Sensitivity
) -> list[str]:
    return [
        f"Released quantity: the output h = W u + b of layer {layer!r} (before its activation "
        "function), one vector per input.",
        f"Input domain: every model input lies in [{INPUT_LOW}, {INPUT_HIGH}]^d (pixels scaled to "
        f"[0, 1]); interval bound propagation through the modules before the layer gives the box "
        f"of the layer input u: low in [{float(box.low.min()):.4g}, {float(box.low.max()):.4g}], "
        f"high in [{float(box.high.min()):.4g}, {float(box.high.max()):.4g}].",
        "Neighbouring inputs, 'whole input': any two inputs in the box. L1 sensitivity "
        f"Δ1 = sum_ij |A_ij| w_j = {sens.l1_whole_input:.6g} (A the layer's Jacobian, w the box "
        "width); L2 sensitivity Δ2 = min(||s||_2, ||A diag(w)||_op sqrt(d)) with "
        f"s_i = sum_j |A_ij| w_j: min({sens.l2_per_coordinate_bound:.6g}, "
        f"{sens.l2_operator_bound:.6g}) = {sens.l2_whole_input:.6g}.",
        "Neighbouring inputs, 'one coordinate': inputs differing in one coordinate of u (one pixel "
        f"for a first layer). Δ1 = max_j w_j ||A_:j||_1 = {sens.l1_one_coordinate:.6g}; "
        f"Δ2 = max_j w_j ||A_:j||_2 = {sens.l2_one_coordinate:.6g}.",
        "Laplace: epsilon = Δ1 / b (delta = 0), b = the Laplace scale (fitted to the pruning "
        "perturbation, or the calibrated noise scale).",
        f"Gaussian: delta = {config.delta:g}; epsilon from the analytic Gaussian mechanism "
        "(Balle & Wang 2018), valid at any epsilon; the classical "
        "sigma = Δ2 sqrt(2 ln(1.25/delta)) / epsilon is also reported and is valid only for "
        "epsilon < 1.",
        "Pruning: one-shot magnitude pruning of the layer's weight (bias kept), keeping the "
        "round(k n) largest |W_ij|; no fine-tuning. The perturbation is measured on the private "
        "records as e = (W - W_k) u.",
        "Matched noise: i.i.d. noise on every coordinate of the unpruned layer's output, its scale "
        "bisected until test accuracy (mean over "
        f"{config.noise_repeats} draws) is at most the pruned model's test accuracy.",
    ]


def _grid_indices(labels: torch.Tensor, count: int) -> torch.Tensor:
    """First record of each class (in class order), then the next records: ``count`` in all."""
    firsts = [int(torch.nonzero(labels == c)[0]) for c in torch.unique(labels).tolist()]
    chosen = set(firsts)
    rest = [i for i in range(len(labels)) if i not in chosen]
    return torch.tensor((firsts + rest)[: min(count, len(labels))])


def _noise_perturb(mechanism: Mechanism, scale: float) -> Perturb:
    def perturb(h: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return h + scale * unit_noise(h.shape, mechanism=mechanism, generator=generator)

    return perturb


class _Attack:
    """Attacks on one layer's releases, sharing the records, decoder settings and the first decoder.

    The first :meth:`run` must be on the unprotected release: its decoder is kept as the
    *unadapted* attacker, which later releases are also decoded with (an attacker who ignores the
    protection). The *adapted* attacker trains a fresh decoder on each release.
    """

    def __init__(
        self,
        config: ActivationPrivacyConfig,
        layer: str,
        x_public: torch.Tensor,
        x_private: torch.Tensor,
        grid: torch.Tensor,
        progress: bool,
    ) -> None:
        self.config, self.layer, self.x_public, self.x_private = config, layer, x_public, x_private
        self.grid, self.progress = grid, progress
        self.unadapted: Inverter | None = None

    def run(self, model: nn.Module, *, perturb: Perturb | None, seed: int) -> _AttackOutcome:
        """Train a decoder on the public release of ``model``, decode the private release."""
        _, h_public = capture_layer_io(model, self.layer, self.x_public)
        _, h_private = capture_layer_io(model, self.layer, self.x_private)
        if perturb is not None:
            h_private = perturb(h_private, torch.Generator().manual_seed(seed + 1))
        inverter = train_inverter(
            h_public,
            self.x_public,
            perturb=perturb,
            epochs=self.config.inverter_epochs,
            lr=self.config.inverter_lr,
            hidden=self.config.inverter_hidden,
            seed=seed,
            progress=self.progress,
        )
        if self.unadapted is None:
            self.unadapted = inverter
        recon = reconstruct(inverter, h_private)
        return _AttackOutcome(
            adapted=reconstruction_quality(recon, self.x_private),
            unadapted=reconstruction_quality(
                reconstruct(self.unadapted, h_private), self.x_private
            ),
            grid_reconstructions=recon[self.grid],
        )


def run_activation_privacy(
    config: ActivationPrivacyConfig, *, progress: bool = False
) -> ActivationPrivacyResult:
    """Run the study of :mod:`fedprune.activation.study` and return its results (nothing written).

    Raises
    ------
    ValueError
        Unknown dataset, model or layer (the messages list the valid names), or inputs outside
        ``[0, 1]``.
    """
    start = time.perf_counter()
    bundle = load_dataset(config.dataset, data_dir=config.data_dir, seed=config.seed)
    split = split_public_private(
        bundle,
        public_fraction=config.public_fraction,
        public_kind="in-distribution",
        seed=config.seed,
    )
    x_public = split.public.dataset.tensors[0]
    x_private, y_private = split.private.dataset.tensors
    x_test, y_test = split.test.tensors
    for name, x in (("public", x_public), ("private", x_private), ("test", x_test)):
        if float(x.min()) < INPUT_LOW or float(x.max()) > INPUT_HIGH:
            raise ValueError(
                f"expected {name} inputs in [{INPUT_LOW}, {INPUT_HIGH}], got "
                f"[{float(x.min())}, {float(x.max())}]"
            )

    torch.manual_seed(config.seed)
    model = create_model(config.model, input_shape=split.input_shape, num_classes=split.num_classes)
    layer = config.layer if config.layer is not None else default_layer_name(model)
    affine = get_affine_layer(model, layer)  # fail fast on a bad name, before training
    train_sgd(
        model,
        split.public.dataset,
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=config.seed,
        progress=progress,
        desc="classifier",
    )
    model.eval()
    base_accuracy = evaluate(model, split.test).accuracy
    logger.info("classifier test accuracy %.4f; attacking layer %r", base_accuracy, layer)

    box = layer_input_box(
        model, layer, probe=x_public[:256], input_low=INPUT_LOW, input_high=INPUT_HIGH
    )
    sens = affine_sensitivity(affine_jacobian(affine, tuple(box.low.shape)), box.width)
    u_private, h_private = capture_layer_io(model, layer, x_private)

    grid = _grid_indices(y_private, config.grid_examples)
    attack = _Attack(config, layer, x_public, x_private, grid, progress)
    mean_image = x_public.mean(dim=0, keepdim=True).expand_as(x_private)
    result = ActivationPrivacyResult(
        config=config,
        layer=layer,
        layer_summary={
            "name": layer,
            "type": type(affine).__name__,
            "weight_shape": list(affine.weight.shape),
            "num_weights": affine.weight.numel(),
            "input_shape": list(u_private.shape[1:]),
            "output_shape": list(h_private.shape[1:]),
        },
        data_summary={
            "dataset": config.dataset,
            "public": split.public.description,
            "private": split.private.description,
            "num_public": len(x_public),
            "num_private": len(x_private),
            "num_test": len(x_test),
            "classifier_trained_on": "public records only",
        },
        input_box=box,
        sensitivity=sens,
        base_accuracy=base_accuracy,
        mean_image=reconstruction_quality(mean_image, x_private),
        settings=[],
        pruning=[],
        assumptions=_assumptions(config, layer, box, sens),
        caveats=list(CAVEATS),
        grid_originals=x_private[grid],
    )

    def record(setting: SettingResult, outcome: _AttackOutcome, label: str) -> None:
        result.settings.append(setting)
        result.grid_rows.append(
            (
                f"{label}\nacc {setting.test_accuracy:.2f} SSIM {setting.recon_ssim:.2f}",
                outcome.grid_reconstructions,
            )
        )

    outcome = attack.run(model, perturb=None, seed=config.seed)
    record(
        SettingResult.of("none", 1.0, 0.0, 0.0, base_accuracy, outcome, None, "no protection"),
        outcome,
        "no protection",
    )
    for i, k in enumerate(tqdm(config.keep_fractions, desc="keep fractions", disable=not progress)):
        seed = config.seed + 1000 * (i + 1)
        pruned = prune_model_layer(model, layer, keep_fraction=k)
        accuracy = evaluate(pruned, split.test).accuracy
        stats = measure_perturbation(affine, u_private, keep_fraction=k)
        report = PruningReport(
            perturbation=stats,
            equivalent_laplace=mechanism_epsilon(
                sens, mechanism="laplace", scale=stats.laplace.scale, delta=config.delta
            ),
            equivalent_gaussian=mechanism_epsilon(
                sens, mechanism="gaussian", scale=stats.gaussian.scale, delta=config.delta
            ),
            test_accuracy=accuracy,
        )
        result.pruning.append(report)
        result.perturbation_samples.append(
            activation_perturbation(affine, u_private, keep_fraction=k)
        )
        outcome = attack.run(pruned, perturb=None, seed=seed)
        basis = "equivalent epsilon of the Laplace fit (analogy: pruning is deterministic, no DP)"
        setting = SettingResult.of(
            "pruning",
            k,
            stats.laplace.scale,
            stats.std,
            accuracy,
            outcome,
            report.equivalent_laplace,
            basis,
        )
        record(setting, outcome, f"pruned, k={k:g}")
        for j, mechanism in enumerate(MECHANISMS):
            noise_seed = seed + 10 * (j + 1)
            noise = calibrate_noise_scale(
                model,
                layer,
                x_test,
                y_test,
                mechanism=mechanism,
                target_accuracy=accuracy,
                repeats=config.noise_repeats,
                seed=noise_seed,
            )
            eps = mechanism_epsilon(
                sens, mechanism=mechanism, scale=noise.scale, delta=config.delta
            )
            perturb = _noise_perturb(mechanism, noise.scale) if noise.scale > 0 else None
            outcome = attack.run(model, perturb=perturb, seed=noise_seed)
            basis = (
                "Laplace mechanism, epsilon = Δ1 / b (delta 0)"
                if mechanism == "laplace"
                else f"analytic Gaussian mechanism, delta {config.delta:g}"
            )
            setting = SettingResult.of(
                mechanism, k, noise.scale, noise.std, noise.accuracy, outcome, eps, basis
            )
            record(setting, outcome, f"{mechanism}, matched to k={k:g}")
    result.seconds = time.perf_counter() - start
    logger.info("activation-privacy study finished in %.1f s", result.seconds)
    return result


def _pruning_json(report: PruningReport) -> dict[str, Any]:
    out = asdict(report)
    for key in ("equivalent_laplace", "equivalent_gaussian"):
        eps: MechanismEpsilon = getattr(report, key)
        out[key]["classical_valid"] = eps.classical_valid
        out[key]["note"] = "analogy only: pruning is deterministic, this is not a DP guarantee"
    out["perturbation"]["laplace"]["std"] = report.perturbation.laplace.std
    return out


def results_dict(result: ActivationPrivacyResult) -> dict[str, Any]:
    """The JSON-ready content of ``results.json`` (non-finite floats, e.g. the epsilon of zero
    noise, as ``None``: the :mod:`fedprune.io` policy)."""
    return to_jsonable(
        {
            "study": "activation privacy: pruning vs explicit noise against activation inversion",
            "scope": "activation privacy of one input's hidden activations; NOT record-level DP "
            "of training data",
            "threat_model": THREAT_MODEL,
            "assumptions": result.assumptions,
            "caveats": result.caveats,
            "layer": result.layer_summary,
            "data": result.data_summary,
            "sensitivity": asdict(result.sensitivity),
            "base_test_accuracy": result.base_accuracy,
            "mean_image_baseline": asdict(result.mean_image),
            "settings": [asdict(s) for s in result.settings],
            "pruning": [_pruning_json(r) for r in result.pruning],
            "seconds": result.seconds,
        }
    )


def save_activation_privacy(
    result: ActivationPrivacyResult, out_dir: str | Path
) -> dict[str, Path]:
    """Write ``results.json``, ``results.csv``, ``config.json`` and the figures to ``out_dir``.

    Returns the written paths by short name (``results``, ``csv``, ``config``, ``tradeoff``,
    ``reconstructions``, ``perturbation``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "results": out / "results.json",
        "csv": out / "results.csv",
        "config": out / "config.json",
        "tradeoff": out / "tradeoff.png",
        "reconstructions": out / "reconstructions.png",
        "perturbation": out / "perturbation.png",
    }
    write_json(paths["results"], results_dict(result))
    write_json(paths["config"], asdict(result.config))
    rows = [asdict(s) for s in result.settings]
    write_csv(paths["csv"], rows, list(rows[0]))
    name = f"{result.config.dataset} / {result.config.model} layer {result.layer!r}"
    plot_tradeoff(
        rows,
        mean_image_mse=result.mean_image.mse,
        mean_image_ssim=result.mean_image.ssim,
        title=f"Inverting hidden activations of private records ({name})",
        path=paths["tradeoff"],
    )
    plot_reconstruction_grid(
        result.grid_originals,
        result.grid_rows,
        title=f"Decoder reconstructions of private records from layer activations ({name})",
        path=paths["reconstructions"],
    )
    plot_perturbation_fits(
        list(
            zip((r.perturbation for r in result.pruning), result.perturbation_samples, strict=True)
        ),
        title=f"Pruning perturbation e = (W - W_k) u on private records ({name}), log density",
        path=paths["perturbation"],
    )
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths
