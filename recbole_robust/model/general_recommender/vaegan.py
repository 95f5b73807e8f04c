r"""
VAEGAN
################################################
Reference:
    Xianwen Yu, Xiaoning Zhang, Yang Cao and Min Xia. "VAEGAN: A Collaborative Filtering Framework
    based on Adversarial Variational Autoencoders." in IJCAI 2019.

Three players, each with its own optimiser (``recbole_robust.trainer.gan.GANTrainer``):

* **G**, the auto-encoder [I -> 600 -> 200 -> 600 -> I]. The encoder is implicit (Adversarial
  Variational Bayes, section 3.1): z = W2 (f(W1 (x~ + e1) + b1) + e2) + b2 with f = tanh,
  x~ = dropout_0.5(x / ||x||) (input dropout and Mult-VAE's input normalisation) and Gaussian noise
  e1 ~ N(0, s1^2 I), e2 ~ N(0, s2^2 I) (``noise_std: [s1, s2]``). The paper writes
  z = f(f(x~ + e1) + e2); its outer f is affine here, because a bounded z could never match the
  N(0, I) prior that T compares it with. The decoder mirrors the encoder (tanh hidden layer) and
  outputs logits; the likelihood is logistic (section 3.2, ``likelihood: logistic``) or Mult-VAE's
  multinomial (``likelihood: multinomial``).
* **T(x, z)**, the AVB discriminator: an MLP over [x / ||x||, z], trained with eq. 4 to tell
  (x, z ~ q(z|x)) (label 1) from (x, z ~ N(0, I)) (label 0); at its optimum T = log q(z|x) - log p(z)
  (eq. 5), which replaces the KL term: G minimises -log p(x|z) + alpha T(x, z) (eq. 8), alpha
  annealed linearly from 0 to ``alpha_max`` over ``anneal_epochs`` epochs, updated every batch
  (section 3.2; the paper's alpha reaches 0.2 at about epoch 80).
* **D(v | z_c)**, the auxiliary conditional discriminator of section 3.3 (variants ``AVB+D``,
  ``AVB+D+C``): an MLP over [v, z_c] with z_c = tanh(W_c x + b_c) a user vector computed from the
  user's history by D's own parameters xi (trained with D, eq. 9). Real samples are x, fake samples
  the reconstruction probabilities sigmoid(logits) masked to the observed items, x^ * x, so G gets
  no gradient from D on items the user has not interacted with. G adds beta * (-log sigma(D(x^ * x |
  z_c))) (eq. 11, the non-saturating form eq. 11 and 13 write; eq. 10 is the saturating one).
* The contractive penalty (variant ``AVB+D+C``, eq. 12) adds lambda ||dz/dx~||_F^2 per user, the
  Jacobian of the encoder with respect to its input. For this encoder
  J = W2 diag(s) W1 with s = 1 - tanh^2(W1 (x~ + e1) + b1), so
  ||J||_F^2 = s^T ((W1 W1^T) o (W2^T W2)) s: two hidden x hidden Gram matrices per batch and one
  quadratic form per user, no items x latent Jacobian. (Eq. 13 writes "+ lambda ||J||" inside a
  maximisation; the penalty is subtracted there, i.e. added to G's loss.)

At evaluation the encoder is deterministic (no dropout, e1 = e2 = 0) and items are ranked by the
decoder's logits. Choices the paper leaves open and made here: T and D are one-hidden-layer
LeakyReLU MLPs (``disc_hidden_size``), z_c has ``cond_size`` dimensions, T sees the normalised
history without dropout, one optimiser per player with the same learner and learning rate, each
batch updates T and D once and then G once (after T and D), and a batch is ``train_batch_size``
users (the paper's batch of 256 users): RecBole's ``UserDataLoader``, as for its own auto-encoders,
so every user appears once per epoch.
"""
import torch
import torch.nn.functional as F
from torch import nn

from recbole.model.abstract_recommender import AutoEncoderMixin, GeneralRecommender
from recbole.model.init import xavier_normal_initialization
from recbole.utils import InputType

from recbole_robust.errors import RecBoleRobustError
from recbole_robust.model.cache import distinct_user_scores

VARIANTS = ("AVB", "AVB+D", "AVB+D+C")


class VAEGAN(GeneralRecommender, AutoEncoderMixin):
    r"""Adversarial variational auto-encoder: AVB encoder, discriminators T and D, contractive penalty."""

    input_type = InputType.POINTWISE
    trainer_class = "GANTrainer"  # recbole_robust.trainer.gan.GANTrainer, resolved by the registry
    user_dataloader = True  # trained on batches of users, like RecBole's auto-encoders

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.variant = config["variant"]
        if self.variant not in VARIANTS:
            raise RecBoleRobustError(f"variant must be one of {', '.join(VARIANTS)}, not {self.variant!r}")
        self.use_d = self.variant in ("AVB+D", "AVB+D+C")
        self.use_c = self.variant == "AVB+D+C"
        self.hidden_size = config["hidden_size"]
        self.latent_size = config["latent_size"]
        self.dropout_prob = config["dropout_prob"]
        self.noise_std = [float(s) for s in config["noise_std"]]
        self.alpha_max = config["alpha_max"]
        self.anneal_epochs = config["anneal_epochs"]
        self.beta = config["beta"]
        self.contractive_weight = config["contractive_weight"]
        self.likelihood = config["likelihood"]
        self._check_hyper_parameters()
        self.build_histroy_items(dataset)

        # define layers: G (encoder, decoder), T, D with its conditional user vector
        self.encoder_hidden = nn.Linear(self.n_items, self.hidden_size)  # W1, b1
        self.encoder_out = nn.Linear(self.hidden_size, self.latent_size)  # W2, b2
        self.decoder = nn.Sequential(
            nn.Linear(self.latent_size, self.hidden_size), nn.Tanh(), nn.Linear(self.hidden_size, self.n_items)
        )
        disc = config["disc_hidden_size"]
        self.t_net = nn.Sequential(
            nn.Linear(self.n_items + self.latent_size, disc), nn.LeakyReLU(0.2), nn.Linear(disc, 1)
        )
        if self.use_d:
            self.cond_net = nn.Linear(self.n_items, config["cond_size"])  # xi
            self.d_net = nn.Sequential(
                nn.Linear(self.n_items + config["cond_size"], disc), nn.LeakyReLU(0.2), nn.Linear(disc, 1)
            )

        # parameters initialization
        self.apply(xavier_normal_initialization)

    def _check_hyper_parameters(self):
        checks = [
            (0 <= self.dropout_prob < 1, f"dropout_prob must be in [0, 1), got {self.dropout_prob}"),
            (len(self.noise_std) == 2 and min(self.noise_std) >= 0,
             f"noise_std must be two standard deviations >= 0 [e1, e2], got {self.noise_std}"),
            (self.alpha_max >= 0, f"alpha_max must be >= 0, got {self.alpha_max}"),
            (self.anneal_epochs >= 0, f"anneal_epochs must be >= 0, got {self.anneal_epochs}"),
            (self.beta >= 0, f"beta must be >= 0, got {self.beta}"),
            (self.contractive_weight >= 0, f"contractive_weight must be >= 0, got {self.contractive_weight}"),
            (self.likelihood in ("logistic", "multinomial"),
             f"likelihood must be logistic or multinomial, not {self.likelihood!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise RecBoleRobustError(message)

    # ----------------------------------------------------------------------------------------- players
    def players(self):
        """``{player: parameters}``; the GAN trainer gives each player its own optimiser."""
        players = {
            "G": [*self.encoder_hidden.parameters(), *self.encoder_out.parameters(), *self.decoder.parameters()],
            "T": list(self.t_net.parameters()),
        }
        if self.use_d:
            players["D"] = [*self.cond_net.parameters(), *self.d_net.parameters()]
        return players

    def alpha(self, progress):
        """alpha after ``progress`` epochs (fractional): linear from 0 to ``alpha_max`` over ``anneal_epochs``."""
        if self.anneal_epochs == 0:
            return self.alpha_max
        return self.alpha_max * min(1.0, progress / self.anneal_epochs)

    # ----------------------------------------------------------------------------------------- G
    def encode(self, x, noise=True):
        """z [B, latent] and the encoder's hidden pre-activation [B, hidden] for histories ``x`` [B, I].

        ``noise=False`` (evaluation): no input dropout and e1 = e2 = 0.
        """
        h = F.normalize(x)
        if noise:
            h = F.dropout(h, self.dropout_prob, training=True)
            if self.noise_std[0]:
                h = h + self.noise_std[0] * torch.randn_like(h)
        pre = self.encoder_hidden(h)
        hidden = torch.tanh(pre)
        if noise and self.noise_std[1]:
            hidden = hidden + self.noise_std[1] * torch.randn_like(hidden)
        return self.encoder_out(hidden), pre

    def forward(self, x, noise=True):
        z, pre = self.encode(x, noise)
        return self.decoder(z), z, pre

    def reconstruction_loss(self, logits, x):
        """-log p(x|z), summed over items, mean over users."""
        if self.likelihood == "logistic":
            return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1).mean()
        return -(F.log_softmax(logits, 1) * x).sum(1).mean()

    def contractive_penalty(self, pre):
        """||dz/dx~||_F^2 per user (eq. 12) from the hidden pre-activation ``pre`` [B, hidden]."""
        s = 1 - torch.tanh(pre).pow(2)
        w1, w2 = self.encoder_hidden.weight, self.encoder_out.weight  # [hidden, I], [latent, hidden]
        gram = (w1 @ w1.T) * (w2.T @ w2)
        return ((s @ gram) * s).sum(1)

    # ----------------------------------------------------------------------------------------- T, D
    def t_logit(self, x, z):
        return self.t_net(torch.cat([F.normalize(x), z], 1)).squeeze(1)

    def d_logit(self, v, x):
        """D(v | z_c(x)): ``v`` is x (real) or the masked reconstruction (fake)."""
        z_c = torch.tanh(self.cond_net(x))
        return self.d_net(torch.cat([v, z_c], 1)).squeeze(1)

    @staticmethod
    def masked_reconstruction(logits, x):
        """x^ * x: reconstruction probabilities, reset to 0 on the items the user has not interacted with."""
        return torch.sigmoid(logits) * x

    # ----------------------------------------------------------------------------------------- losses
    def generator_batch(self, user):
        """Histories of ``user`` and one pass of G: ``{"x", "logits", "z", "pre"}`` (noisy in training mode)."""
        x = self.get_rating_matrix(user)
        logits, z, pre = self.forward(x, noise=self.training)
        return {"x": x, "logits": logits, "z": z, "pre": pre}

    def discriminator_losses(self, batch):
        """``{player: loss}`` of T (eq. 4) and D (eq. 9), as losses to minimise; G's outputs detached."""
        x, z = batch["x"], batch["z"].detach()
        prior = torch.randn_like(z)
        losses = {"T": (F.softplus(-self.t_logit(x, z)) + F.softplus(self.t_logit(x, prior))).mean()}
        if self.use_d:
            fake = self.masked_reconstruction(batch["logits"].detach(), x)
            losses["D"] = (F.softplus(-self.d_logit(x, x)) + F.softplus(self.d_logit(fake, x))).mean()
        return losses

    def generator_loss(self, batch, alpha):
        """G's loss (eq. 13, J^G negated) and its parts ``{"rec", "T", "D", "C"}`` (unweighted)."""
        x = batch["x"]
        parts = {"rec": self.reconstruction_loss(batch["logits"], x), "T": self.t_logit(x, batch["z"]).mean()}
        loss = parts["rec"] + alpha * parts["T"]
        if self.use_d:
            parts["D"] = F.softplus(-self.d_logit(self.masked_reconstruction(batch["logits"], x), x)).mean()
            loss = loss + self.beta * parts["D"]
        if self.use_c:
            parts["C"] = self.contractive_penalty(batch["pre"]).mean()
            loss = loss + self.contractive_weight * parts["C"]
        return loss, parts

    def calculate_loss(self, interaction):
        """G's loss on the distinct users of ``interaction`` at ``alpha_max`` (the GAN trainer does not use it)."""
        batch = self.generator_batch(torch.unique(interaction[self.USER_ID]))
        return self.generator_loss(batch, self.alpha_max)[0]

    # ----------------------------------------------------------------------------------------- ranking
    def predict(self, interaction):
        return distinct_user_scores(interaction[self.USER_ID], interaction[self.ITEM_ID],
                                    lambda users: self.forward(self.get_rating_matrix(users), noise=False)[0])

    def full_sort_predict(self, interaction):
        user = interaction[self.USER_ID]
        return self.forward(self.get_rating_matrix(user), noise=False)[0].view(-1)
