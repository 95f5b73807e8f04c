"""Sharpness-aware minimisation (SAM, ASAM, SSAM-F) as a step of the trainer."""
import pytest
import torch

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.quick_start import build_model, load_data, make_config
from recbole_robust.registry import get_trainer
from recbole_robust.trainer.sharpness import SharpnessStep


def bpr_trainer(fast, model="BPR", **config):
    config = make_config(model, "ml-100k", config_dict={**fast, "learner": "sgd", "learning_rate": 0.05, **config})
    _, train_data, _, _ = load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], model)(config, build_model(config, train_data))
    return trainer, train_data


def trained(fast, **config):
    trainer, train_data = bpr_trainer(fast, **config)
    trainer._train_epoch(train_data, 0)
    return trainer.model.state_dict()


def test_rho_zero_equals_the_base_optimiser(fast):
    plain = trained(fast)
    for method in ("sam", "asam", "ssam_f"):
        sharp = trained(fast, sharpness=method, sam_rho=0.0)
        for name in plain:
            assert torch.allclose(sharp[name], plain[name], atol=1e-6), (method, name)


def perturbed_point(fast, method, rho=0.05, **config):
    """(w, w + e) of the first batch, and the loss RecBole's loop receives there."""
    trainer, train_data = bpr_trainer(fast, sharpness=method, sam_rho=rho, **config)
    batch = next(iter(train_data))
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    step = trainer.sharpness_step.epoch(trainer.model.calculate_loss, 0)
    assert isinstance(step, SharpnessStep)
    trainer.optimizer.zero_grad()
    loss = step.loss(batch)
    after = [p.detach().clone() for p in params]
    step.restore()
    return trainer, batch, before, after, loss


def test_sam_perturbed_point_has_norm_rho_along_the_gradient(fast):
    trainer, batch, before, after, loss = perturbed_point(fast, "sam", rho=0.05)
    e = [a - b for a, b in zip(after, before)]
    assert torch.sqrt(sum((x ** 2).sum() for x in e)).item() == pytest.approx(0.05, rel=1e-4)
    # e points along the gradient at w: the loss rises there
    trainer.model.zero_grad()
    clean = trainer.model.calculate_loss(batch)
    clean.backward()
    grads = [p.grad for p in trainer.model.parameters() if p.requires_grad]
    cosine = sum((g * x).sum() for g, x in zip(grads, e)) / (
        torch.sqrt(sum((g ** 2).sum() for g in grads)) * 0.05)
    assert cosine.item() == pytest.approx(1.0, abs=1e-4)
    assert loss.item() > clean.item()
    for p, b in zip([p for p in trainer.model.parameters() if p.requires_grad], before):
        assert torch.equal(p, b)  # restored


def test_asam_perturbation_has_norm_rho_in_the_weights_scale(fast):
    _, _, before, after, _ = perturbed_point(fast, "asam", rho=0.5)
    scaled = [(a - b) / b.abs() for a, b in zip(after, before)]  # T^-1 e, T = |w|
    assert torch.sqrt(sum((x[x.isfinite()] ** 2).sum() for x in scaled)).item() == pytest.approx(0.5, rel=1e-3)


def test_ssam_f_perturbs_only_the_entries_of_largest_fisher_information(fast):
    _, _, before, after, _ = perturbed_point(fast, "ssam_f", rho=0.05, ssam_sparsity=0.9)
    moved = torch.cat([(a != b).flatten() for a, b in zip(after, before)])
    total = moved.numel()
    assert 0 < moved.sum().item() <= int(total * 0.1)
    norm = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(after, before))).item()
    assert 0 < norm < 0.05  # the masked SAM step: its norm is the kept share of rho


def test_sam_trains_and_composes_with_the_adversary(fast):
    trainer, train_data = bpr_trainer(fast, model="APR", sharpness="sam", sam_rho=0.05, epochs=3,
                                      learner="adam", learning_rate=0.01, adv_start_epoch=0)
    assert trainer.adversarial_loss is not None  # APR: BPR plus the adversary on its embeddings
    losses = [trainer._train_epoch(train_data, epoch) for epoch in range(3)]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("setting, message", [
    ({"sharpness": "gsam"}, "sharpness must be sam, asam or ssam_f"),
    ({"sharpness": "sam", "sam_rho": -1}, "sam_rho must be a number >= 0"),
    ({"sharpness": "ssam_f", "ssam_sparsity": 1.0}, "ssam_sparsity must be a number in [0, 1)"),
    ({"sharpness": "ssam_f", "ssam_mask_interval": 0}, "ssam_mask_interval must be an integer >= 1"),
])
def test_bad_sharpness_settings_are_one_line_errors(fast, setting, message):
    with pytest.raises(RecBoleRobustError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        make_config("BPR", "ml-100k", config_dict={**fast, **setting})


def test_sam_with_mirror_gradient_is_refused_before_training(fast):
    with pytest.raises(RecBoleRobustError, match="cannot be combined"):
        bpr_trainer(fast, sharpness="sam", mirror_gradient=True)


def test_cli_refuses_sam_with_mirror_gradient_and_writes_nothing(fast, workdir):
    from conftest import run_cli

    result = run_cli(["--model=BPR", "--dataset=ml-100k", "--sharpness=asam", "--mirror_gradient=True",
                      f"--build_dir={fast['build_dir']}", "--checkpoint_dir=ck"], workdir)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "cannot be combined" in result.stderr
    assert not (workdir / "ck").exists()


def test_the_step_is_built_once_and_keeps_its_state_across_epochs(fast):
    trainer, train_data = bpr_trainer(fast, sharpness="ssam_f", ssam_mask_interval=2)
    step, sam, masks = trainer.sharpness_step, trainer.sharpness_step.sam, []
    for epoch in range(3):
        trainer._train_epoch(train_data, epoch)
        assert trainer.sharpness_step is step and step.sam is sam
        masks.append(step.mask)
    # the SSAM-F mask is recomputed every ssam_mask_interval epochs, and kept in between
    assert masks[0] is not None and masks[1] is masks[0] and masks[2] is not masks[1]
