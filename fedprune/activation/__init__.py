"""Pruning as activation privacy (Huang et al. 2020): perturbation, equivalent epsilon, inversion.

Everything here is about the hidden activations of an input as seen by whoever holds them, not
record-level differential privacy of training data. The "equivalent epsilon" of pruning is an
analogy (pruning is deterministic), not a guarantee; explicit noise gives real guarantees.
"""

from fedprune.activation.cli import add_activation_privacy_parser
from fedprune.activation.epsilon import (
    MechanismEpsilon,
    gaussian_delta_analytic,
    gaussian_epsilon_analytic,
    gaussian_epsilon_classical,
    laplace_epsilon,
    mechanism_epsilon,
)
from fedprune.activation.inversion import (
    Inverter,
    ReconstructionQuality,
    reconstruct,
    reconstruction_quality,
    train_inverter,
)
from fedprune.activation.layers import (
    affine_layer_names,
    capture_layer_io,
    default_layer_name,
    get_affine_layer,
)
from fedprune.activation.metrics import mse_per_image, ssim
from fedprune.activation.noise import CalibratedNoise, calibrate_noise_scale, unit_noise
from fedprune.activation.perturbation import (
    NoiseFit,
    PerturbationStats,
    activation_perturbation,
    fit_gaussian,
    fit_laplace,
    magnitude_prune,
    measure_perturbation,
    prune_model_layer,
)
from fedprune.activation.sensitivity import (
    InputBox,
    Sensitivity,
    affine_jacobian,
    affine_sensitivity,
    layer_input_box,
)
from fedprune.activation.study import (
    ActivationPrivacyConfig,
    ActivationPrivacyResult,
    run_activation_privacy,
    save_activation_privacy,
)

__all__ = [
    "ActivationPrivacyConfig",
    "ActivationPrivacyResult",
    "CalibratedNoise",
    "InputBox",
    "Inverter",
    "MechanismEpsilon",
    "NoiseFit",
    "PerturbationStats",
    "ReconstructionQuality",
    "Sensitivity",
    "activation_perturbation",
    "add_activation_privacy_parser",
    "affine_jacobian",
    "affine_layer_names",
    "affine_sensitivity",
    "calibrate_noise_scale",
    "capture_layer_io",
    "default_layer_name",
    "fit_gaussian",
    "fit_laplace",
    "gaussian_delta_analytic",
    "gaussian_epsilon_analytic",
    "gaussian_epsilon_classical",
    "get_affine_layer",
    "laplace_epsilon",
    "layer_input_box",
    "magnitude_prune",
    "measure_perturbation",
    "mechanism_epsilon",
    "mse_per_image",
    "prune_model_layer",
    "reconstruct",
    "reconstruction_quality",
    "run_activation_privacy",
    "save_activation_privacy",
    "ssim",
    "train_inverter",
    "unit_noise",
]
