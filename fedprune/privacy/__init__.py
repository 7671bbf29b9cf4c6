"""Privacy: the DP-SGD plan, noise calibration and sources, and the persistent budgeted ledger."""

from fedprune.privacy.accounting import AccountantName, calibrate_noise, check_delta, epsilon_of
from fedprune.privacy.ledger import PrivacyBudgetExceededError, PrivacyLedger
from fedprune.privacy.ledger_store import LedgerIntegrityError, LedgerStore
from fedprune.privacy.noise import NoiseSource, ReproducibleNoise, SecureNoise
from fedprune.privacy.plan import DPPlan

__all__ = [
    "AccountantName",
    "DPPlan",
    "LedgerIntegrityError",
    "LedgerStore",
    "NoiseSource",
    "PrivacyBudgetExceededError",
    "PrivacyLedger",
    "ReproducibleNoise",
    "SecureNoise",
    "calibrate_noise",
    "check_delta",
    "epsilon_of",
]
