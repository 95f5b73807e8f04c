"""Robustness evaluation of a trained model: attacks, the analyses (``analyses/``), reports, per-user comparisons."""
from recbole_robust.robustness.attacks import attack_sweep, attack_terms, evaluate_with
from recbole_robust.robustness.compare import evaluate_per_user, paired_t_test

__all__ = ["attack_sweep", "attack_terms", "evaluate_per_user", "evaluate_with", "paired_t_test"]
