"""The model contract: every optional hook the trainer, registry, attacks and analyses look for.

A plugin model is a RecBole model (``GeneralRecommender`` with ``input_type``, ``calculate_loss``,
``predict``, ``full_sort_predict``). Beyond that, the plugin looks for the hooks below and nothing
else; each is optional, and ``hook(model, name)`` is how the plugin's code reads one (a name that is
not listed here is a ``KeyError``, so a new hook cannot be used without being documented here).
Example models: ``VBPR`` (features, perturbation targets, ``rec_loss``), ``FREEDOM`` (graph
rebuilding, per-epoch processing), ``VAEGAN`` (GAN players, its own trainer and loader).
"""
from typing import Dict, Iterable, List, Optional, Protocol, Tuple, runtime_checkable

import torch
from recbole.data.interaction import Interaction


@runtime_checkable
class RobustModel(Protocol):
    """Optional attributes and methods of a plugin model. Read them with ``hook(model, name)``."""

    #: class attribute, read by the registry: True if the model needs item content features; RecBole then
    #: builds its dataset as ``MultimodalDataset`` (``dataset.item_features``: an ``ItemFeatureStore``)
    needs_item_features: bool = False

    #: class attribute, read by the registry: True if the model trains on batches of users (RecBole's
    #: ``UserDataLoader``, as RecBole gives its own auto-encoders), not on interactions
    user_dataloader: bool = False

    #: class attribute, read by the registry: the name of the trainer (``recbole_robust.trainer.TRAINERS``)
    #: RecBole's ``get_trainer`` returns for the model (default ``RobustTrainer``; VAEGAN: ``"GANTrainer"``).
    #: A name, not the class, so that models never import the trainers (they stand below them)
    trainer_class: Optional[str] = None

    #: what may be perturbed, by adversarial training and attacks: ``{tensor name: "row" | "tensor"}``
    #: (a parameter or buffer name; "row": L2 norm per row, e.g. features and embeddings; "tensor": over
    #: the whole tensor, e.g. weight matrices). ``item_features`` names the content features by convention
    perturbation_targets: Dict[str, str] = {}

    #: the content modalities the model uses (e.g. ``["image", "audio"]``), for information adjustment
    modalities: List[str] = []

    def rec_loss(self, interaction: Interaction) -> torch.Tensor:
        """The training loss without regularisers: what an adversary maximises (AMR section 3.2).
        Default: ``calculate_loss``."""

    def modality_location(self, modality: str) -> Tuple[str, slice]:
        """Where a modality's item features live: ``(tensor name, columns)`` of a [n_items, d] tensor."""

    def adjusted_features(self, modality: str, items: torch.Tensor, donors: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Every tensor that changes when ``items`` get the ``modality`` features of ``donors``, rebuilt as
        the model would build it from the adjusted data (e.g. FREEDOM's kNN graph). Default: the rows of
        ``modality_location`` are copied."""

    def pre_epoch_processing(self) -> None:
        """Called by the trainer before every training epoch (e.g. FREEDOM's degree-sensitive edge pruning)."""

    def players(self) -> Dict[str, Iterable[torch.nn.Parameter]]:
        """GAN models (``GANTrainer``): the parameters of each player, ``{"G": ..., "T": ..., "D": ...}``;
        one optimiser each. ``G`` is the generator."""

    def generator_batch(self, users: torch.Tensor) -> dict:
        """GAN models: one pass of the generator on a batch of users; the result is given to
        ``discriminator_losses(batch) -> {player: loss}`` and ``generator_loss(batch, alpha) -> (loss, parts)``,
        with ``alpha(progress)`` the annealed weight of the adversarial term."""


HOOKS = ("needs_item_features", "user_dataloader", "trainer_class", "perturbation_targets", "modalities",
         "rec_loss", "modality_location", "adjusted_features", "pre_epoch_processing", "players", "generator_batch")
DEFAULTS = {"needs_item_features": False, "user_dataloader": False, "perturbation_targets": {}, "modalities": []}


def hook(model, name):
    """The model's (or model class's) hook ``name``, or its default (``None`` for a method it lacks)."""
    if name not in HOOKS:
        raise KeyError(f"'{name}' is not a hook of the model contract (recbole_robust/model/contract.py)")
    value = getattr(model, name, None)
    if value is None:
        return DEFAULTS.get(name)
    return value
