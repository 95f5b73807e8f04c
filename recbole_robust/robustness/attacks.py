"""Attacks at test time on a trained model (AMR table 3 and figure 4, ACAE table 2 and figure 4).

An attack perturbs named tensors of the trained model (item content features, embedding tables,
weight matrices: the model's ``perturbation_targets``) and evaluates it on the test set:

* ``fgm``: the fast gradient method built from the *training* loss: the gradient of the model's
  ``rec_loss`` summed over one pass of the training data, with respect to an additive perturbation,
  scaled to L2 norm ``eps`` per row (features, embeddings) or per tensor (weights);
* ``random``: Gaussian noise with exactly the norms ``fgm`` has (the control);
* ``sign``: ``eps * sign(gradient)``.

Perturbations are injected with ``functional_call`` (``perturbation.call_with``): the model is not
copied and is unchanged afterwards. One gradient pass serves every eps of a sweep. Every evaluation
starts from the run's seed, so clean and attacked metrics use the same sampled negatives.
"""
import torch
from recbole.utils import init_seed

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.contract import hook
from recbole_robust.trainer.perturbation import (
    ADV_TYPES, call_with, gradients, named_tensor, perturbation, rec_loss_fn, target_groups,
)


def attack_terms(config, model):
    """The attacked tensor groups: ``attack_targets``, else the model's ``adv_targets``, else its features.

    Returns a list of ``(names, kinds)``.
    """
    allowed = hook(model, "perturbation_targets")
    key = "attack_targets" if config["attack_targets"] else "adv_targets"
    groups = target_groups(config["attack_targets"] or config["adv_targets"], model, key)
    if not groups:
        groups = [["item_features"]] if "item_features" in allowed else [[n for n, k in allowed.items() if k == "row"]]
    if not any(groups):
        raise RecBoleRobustError(f"{type(model).__name__} has nothing to attack; set attack_targets")
    return [(g, [allowed[n] for n in g]) for g in groups]


def training_gradients(model, train_data, names):
    """Gradient of the training loss (one pass, summed over batches) w.r.t. perturbations of ``names``."""
    loss_fn = rec_loss_fn(model)
    total = {n: torch.zeros_like(named_tensor(model, n)) for n in names}
    model.eval()  # no dropout; the loss is still differentiable
    for interaction in train_data:
        interaction = interaction.to(named_tensor(model, names[0]).device)
        for n, g in gradients(model, names, loss_fn, interaction).items():
            total[n] += g
    return total


def evaluate_with(trainer, test_data, tensors=None):
    """Test metrics of the trainer's model with ``tensors`` replacing its own (a dict of name -> tensor).

    The random number generators are reset to the run's seed first, so that sampled evaluation
    (e.g. 999 negatives per test item) draws the same negatives for every evaluation it is compared with.
    """
    init_seed(trainer.config["seed"], trainer.config["reproducibility"])
    return call_with(trainer.model, tensors or {}, lambda: trainer.evaluate(test_data, load_best_model=False))


def attack_sweep(trainer, train_data, test_data, eps_list, methods=("fgm", "random"), terms=None, seed=0):
    """Evaluate the trained model under each attack method, target group and eps.

    Returns ``(clean_result, rows)``; each row is a dict with ``target``, ``method``, ``eps`` and the
    attacked metrics.
    """
    model = trainer.model
    if any(e < 0 for e in eps_list):
        raise RecBoleRobustError(f"attack_eps must be >= 0, got {min(eps_list)}")
    for method in methods:
        if method not in ADV_TYPES:
            raise RecBoleRobustError(f"attack must be one of {', '.join(ADV_TYPES)}, not '{method}'")
    terms = terms or attack_terms(trainer.config, model)
    clean = evaluate_with(trainer, test_data)
    rows = []
    for names, kinds in terms:
        grads = training_gradients(model, train_data, names)
        for method in methods:
            generator = torch.Generator(device=grads[names[0]].device).manual_seed(seed)
            unit = {n: perturbation(grads[n], 1.0, k, method, generator) for n, k in zip(names, kinds)}
            for eps in eps_list:
                # fgm and random scale linearly with eps; sign noise is eps * sign(g)
                tensors = {n: named_tensor(model, n).detach() + eps * unit[n] for n in names}
                with torch.no_grad():
                    result = evaluate_with(trainer, test_data, tensors)
                rows.append({"target": "+".join(names), "method": method, "eps": float(eps), **result})
    return clean, rows
