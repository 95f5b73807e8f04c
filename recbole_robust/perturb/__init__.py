"""The perturbation floor, under both ``trainer/`` and ``robustness/``: the engine (``engine.py``:
perturbations injected with ``functional_call``, adversarial terms and loss) and the ascent
primitives (``ascent.py``: training gradients, projected ascent, PGD) that adversarial training,
attacks and promotion share."""
