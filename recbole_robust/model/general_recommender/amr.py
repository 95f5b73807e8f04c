r"""
AMR
################################################
Reference:
    Jinhui Tang, Xiaoyu Du, Xiangnan He, Fajie Yuan, Qi Tian and Tat-Seng Chua. "Adversarial
    Training Towards Robust Multimedia Recommender System." in IEEE TKDE 2019.

AMR is VBPR's predictor with one vector per user (eq. 4), y_ui = p_u^T (q_i + E c_i), trained
with an adversary that perturbs the item content features c_i (eq. 5-13):

    L = L_BPR(Theta) + lambda * L_BPR(Theta, c + Delta) + beta ||Theta||^2,
    Delta_i = eps * Gamma_i / ||Gamma_i||,  Gamma_i = dL'_BPR / dDelta_i  (per item row, eq. 11-12)

The model is the predictor only; the perturbation is made by the Trainer's perturbation engine
(``recbole_robust/perturb/engine.py``) from the config: ``adv_targets: [item_features]``,
``adv_eps`` (eps), ``adv_lambda`` (lambda), ``adv_type`` (``fgm``; ``sign`` is the paper's
rejected alternative, ``random`` its control). The L2 regulariser is left out of the perturbed
term and the perturbation is built from the mini-batch loss (section 3.3). Pre-training
(Algorithm 1, line 1): adversarial training starts at ``adv_start_epoch``, or at once when the run
starts from a VBPR checkpoint (``--pretrained``, a VBPR trained with ``single_user_vector: True`` and
``item_bias: False`` has exactly AMR's parameters). The paper's optimiser, Adagrad with mini-batches
of 512, is the default (``properties/model/AMR.yaml``); VBPR's two-vector form is
``single_user_vector: False``.
"""
from recbole_robust.model.general_recommender.vbpr import VBPR


class AMR(VBPR):
    r"""Adversarial Multimedia Recommendation: VBPR's eq. 4 predictor, adversarially trained."""
