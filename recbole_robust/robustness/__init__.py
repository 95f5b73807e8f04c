"""Robustness evaluation: attacks at test time, reports, per-user comparisons."""
from recbole_robust.robustness.attacks import attack_sweep, attack_terms, evaluate_with
from recbole_robust.robustness.compare import evaluate_per_user, paired_t_test
from recbole_robust.robustness.report import write_attack_report

__all__ = ["attack_sweep", "attack_terms", "evaluate_per_user", "evaluate_with", "paired_t_test",
           "write_attack_report"]
