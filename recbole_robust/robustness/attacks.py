"""Attacks at test time on a trained model (AMR table 3 and figure 4, ACAE table 2 and figure 4).

An attack perturbs named tensors of the trained model (item content features, embedding tables,
weight matrices: the model's ``perturbation_targets``) and evaluates it on the test set:

* ``fgm``: the fast gradient method built from the *training* loss: the gradient of the model's
  ``rec_loss`` summed over one pass of the training data, with respect to an additive perturbation,
  scaled to L2 norm ``eps`` per row (features, embeddings) or per tensor (weights);
* ``random``: Gaussian noise with exactly the norms ``fgm`` has (the control);
* ``sign``: ``eps * sign(gradient)``;
* ``pgd``: projected gradient descent (Madry et al., ICLR 2018) on the same training loss, L2
  geometry: ``steps`` steps of FGM of norm ``step_size * eps`` from the current perturbation, each
  followed by the projection onto the eps-ball (per row or per tensor, as FGM's norm), optionally from
  a random start inside the ball (on every row). ``step_size`` defaults to 2.5 / ``steps`` (Madry's
  rule). With one step of size 1 and no random start it is FGM. Each step is one gradient pass over
  the training data, for each eps of a sweep; the batches (and their sampled negatives) are drawn once,
  so every step, and FGM in the same sweep, ascends the same loss.

Perturbations are injected with ``functional_call`` (``perturb.engine.call_with``): the model is not
copied and is unchanged afterwards. One gradient pass serves every eps of a sweep. Every evaluation
starts from the run's seed, so clean and attacked metrics use the same sampled negatives.
"""
from logging import getLogger

import torch
from recbole.utils import init_seed

from recbole_robust import settings
from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.contract import hook
from recbole_robust.perturb.ascent import attack_perturbations, drawn_batches, training_gradients
from recbole_robust.perturb.engine import ADV_TYPES, call_with, named_tensor, perturbation, target_groups

ATTACKS = ADV_TYPES + ("pgd",)
SETTINGS = {
    "attack": (lambda v: v is None or settings.str_list(v, ATTACKS), "one of fgm, sign, random, pgd (or a list)"),
    "attack_eps": settings.NON_NEGATIVE_LIST,
    "attack_steps": settings.POSITIVE_INT,
    "attack_step_size": (lambda v: v is None or settings.is_number(v) and v > 0, "a number > 0 (a fraction of eps) or ~"),
    "attack_random_start": settings.BOOL,
    "attack_targets": (lambda v: v is None or isinstance(v, (str, list)), "a tensor name or a list of them"),
    "attack_metric": (lambda v: v is None or isinstance(v, str) and "@" in v, "a metric name such as ndcg@10"),
    "valid_attack": (lambda v: v is None or v in ATTACKS, "one of fgm, sign, random, pgd or ~"),
    "valid_attack_eps": settings.NON_NEGATIVE,
}
"""The settings of attacks at test time and during validation (``config.SETTINGS``)."""


def attack_methods(attack):
    """``--attack`` value -> methods to run; an adversarial attack is always run with its random control."""
    methods = [attack] if isinstance(attack, str) else list(attack)
    if any(m != "random" for m in methods) and "random" not in methods:
        methods.append("random")
    return methods


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


def evaluate_with(trainer, test_data, tensors=None):
    """Test metrics of the trainer's model with ``tensors`` replacing its own (a dict of name -> tensor).

    The random number generators are reset to the run's seed first, so that sampled evaluation
    (e.g. 999 negatives per test item) draws the same negatives for every evaluation it is compared with.
    """
    init_seed(trainer.config["seed"], trainer.config["reproducibility"])
    return call_with(trainer.model, tensors or {}, lambda: trainer.evaluate(test_data, load_best_model=False))


def pgd_settings(config):
    """``attack_steps``, ``attack_step_size`` and ``attack_random_start`` of ``config`` as PGD's keywords."""
    return {"steps": config["attack_steps"], "step_size": config["attack_step_size"],
            "random_start": bool(config["attack_random_start"])}


def check_attack(methods, eps_list, pgd=None):
    """The arguments of ``attack_sweep`` (a Python caller's), checked with the settings' schema."""
    pgd = pgd or {}
    settings.check_settings({"attack": list(methods), "attack_eps": list(eps_list), "attack_steps": pgd.get("steps", 10),
                             "attack_step_size": pgd.get("step_size")}, SETTINGS)


def attack_sweep(trainer, train_data, test_data, eps_list, methods=("fgm", "random"), terms=None, seed=0, pgd=None,
                 evaluate=None):
    """Evaluate the trained model under each attack method, target group and eps.

    ``pgd`` holds PGD's ``steps``, ``step_size`` and ``random_start`` (``pgd_settings``); ``evaluate``
    replaces ``evaluate_with`` (same arguments), e.g. to keep per-user metrics. Returns
    ``(clean_result, rows)``; each row is a dict with ``target``, ``method``, ``eps`` and the attacked
    metrics.
    """
    evaluate = evaluate or evaluate_with
    model = trainer.model
    check_attack(methods, eps_list, pgd)
    terms = terms or attack_terms(trainer.config, model)
    clean = evaluate(trainer, test_data)
    rows = []
    log = getLogger()
    if "pgd" in methods:
        # FGM and every PGD step on the same batches (the same negatives), moved to the model's device once
        train_data = drawn_batches(train_data, next(model.parameters()).device)
    for names, kinds in terms:
        grads = training_gradients(model, train_data, names)
        for method in methods:
            if method == "pgd":
                for eps in eps_list:
                    tensors = attack_perturbations(model, train_data, [(names, kinds)], eps, "pgd", pgd, seed,
                                                   {tuple(names): grads})
                    with torch.no_grad():
                        result = evaluate(trainer, test_data, tensors)
                    rows.append({"target": "+".join(names), "method": method, "eps": float(eps), **result})
                    log.info(f"pgd on {'+'.join(names)}, eps {eps:g}: done")
                continue
            generator = torch.Generator(device=grads[names[0]].device).manual_seed(seed)
            unit = {n: perturbation(grads[n], 1.0, k, method, generator) for n, k in zip(names, kinds)}
            for eps in eps_list:
                # fgm and random scale linearly with eps; sign noise is eps * sign(g)
                tensors = {n: named_tensor(model, n).detach() + eps * unit[n] for n in names}
                with torch.no_grad():
                    result = evaluate(trainer, test_data, tensors)
                rows.append({"target": "+".join(names), "method": method, "eps": float(eps), **result})
    return clean, rows
