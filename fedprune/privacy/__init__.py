"""Privacy accounting: the DP-SGD plan, noise calibration and the persistent budgeted ledger."""

from fedprune.privacy.accounting import AccountantName, calibrate_noise, epsilon_of
from fedprune.privacy.ledger import PrivacyBudgetExceededError, PrivacyLedger
from fedprune.privacy.plan import DPPlan

__all__ = [
    "AccountantName",
    "DPPlan",
    "PrivacyBudgetExceededError",
    "PrivacyLedger",
    "calibrate_noise",
    "epsilon_of",
]
