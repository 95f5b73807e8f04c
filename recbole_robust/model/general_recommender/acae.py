r"""
ACAE
################################################
Reference:
    Feng Yuan, Lina Yao and Boualem Benatallah. "Adversarial Collaborative Auto-encoder for Top-N
    Recommendation." in IJCNN 2019 (arXiv:1808.05361), eq. (4)-(8), Algorithm 1.

CAE trained with adversarial noise on its encoder weights W1 and decoder weights W2 (eq. 7):

    loss_CE(Theta) + lambda1 loss_CE(Theta, W1 + N1) + lambda2 loss_CE(Theta, W2 + N2) + gamma ||Theta||^2,
    N_adv = eps * g / ||g||   (eq. 4, L2 norm over the whole weight matrix)

The noise comes from the Trainer's perturbation engine (``adv_targets: [encoder.weight,
decoder.weight]``, ``adv_lambda: [lambda1, lambda2]``, ``adv_eps``). Two stages (Algorithm 1):
CAE pre-training with a fixed learning rate until ``adv_start_epoch`` (or ``--pretrained`` from a
CAE checkpoint), then adversarial training with Adagrad (``adv_learner: adagrad``).
"""
from recbole_robust.model.general_recommender.cae import CAE


class ACAE(CAE):
    r"""Adversarial collaborative auto-encoder: CAE plus adversarial noise on W1 and W2."""
