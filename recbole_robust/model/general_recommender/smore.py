r"""
SMORE
################################################
Reference:
    Rongqing Kenneth Ong and Andy W. H. Khong. "Spectrum-based Modality Representation Fusion Graph Convolutional
    Network for Multimodal Recommendation." in WSDM 2025. Authors' code: github.com/kennethorq/SMORE; MMRec's port
    (enoche/MMRec ``src/models/smore.py``), whose defaults (first value of each grid) are used.

MGCN's structure (``mgcn.py``: purifier gates, user-item LightGCN view, item kNN views, preference gates) with
SMORE's spectrum:

* **spectral denoising and fusion** (section 3.2): each modality's projected features ``W_m f^m + b_m`` go to the
  frequency domain (``rfft`` over the embedding dimension, orthonormal), are filtered by a learned complex weight
  per frequency, and come back (``irfft``); the *fusion* spectrum is the product of the modalities' spectra times
  its own learned filter (a convolution of the modalities in the embedding domain);
* each filtered representation gates the item ID embeddings (``e * sigmoid(W e' + b)``), and propagates over its item
  graph: a modality's kNN graph (``knn_k`` neighbours by cosine similarity, weighted, symmetrically normalised), and
  for the fusion the element-wise maximum of the modalities' graphs (max pooling); users aggregate through the
  normalised user-item block ``R``;
* **fusion-guided attention**: each modality's view is weighted by ``softmax(W_q^m tanh(...) (fusion view))`` over
  the embedding dimension; the user-item view gates every part (``sigmoid(W_p E^id + b)``, with dropout
  ``dropout_rate`` on the gates in training); the side embedding is the mean of the modality parts and the fusion
  part, the final one ``E^id + side``.

Loss: BPR + ``reg_weight`` x half the squared norms of the batch's final embeddings / batch size + ``cl_loss`` x
InfoNCE (temperature 0.2) between the side and ID views of the batch's positive items and users (as MGCN).

Where this port differs: any number of modalities (the fusion spectrum multiplies all of them; MMRec's names image
and text); one ``knn_k`` for every modality (MMRec's ``image_knn_k`` and ``text_knn_k`` have the same first value,
10); MMRec's learning-rate schedule ``[0.96, 50]`` is not applied (see MGCN).
"""
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import nn

from recbole_robust.data.graphs import csr_transpose, similarity_knn_graph
from recbole_robust.model.general_recommender.mgcn import SideViewLoss
from recbole_robust.model.layers import LightGCNEncoder, graph_product

FUSION = "fusion"


def max_pool(graphs):
    """The element-wise maximum of sparse graphs over the union of their edges (SMORE's ``max_pool_fusion``)."""
    coo = [g.to_sparse_coo().coalesce() for g in graphs]
    indices = torch.cat([g.indices() for g in coo], 1)
    values = torch.cat([g.values() for g in coo])
    n = coo[0].shape[1]
    keys, inverse = torch.unique(indices[0] * n + indices[1], return_inverse=True)
    pooled = torch.full((len(keys),), -torch.inf, dtype=values.dtype, device=values.device)
    pooled = pooled.scatter_reduce(0, inverse, values, reduce="amax")
    return torch.sparse_coo_tensor(torch.stack([keys // n, keys % n]), pooled, coo[0].shape).coalesce().to_sparse_csr()


class SMORE(SideViewLoss, GeneralRecommender):
    r"""SMORE: spectrally denoised and fused modality views over item kNN graphs, MGCN-style gating and fusion."""

    input_type = InputType.PAIRWISE
    needs_item_features = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = self.embedding_size = config["embedding_size"]
        self.n_layers, self.reg_weight, self.cl_weight = config["n_layers"], config["reg_weight"], config["cl_loss"]
        self.batch_size = config["train_batch_size"]
        self.modalities = config["modalities"] or dataset.item_features.modalities
        self.parts = [*self.modalities, FUSION]
        device = torch.device(config["device"])

        self.encoder = LightGCNEncoder(dataset, config["n_ui_layers"], device)
        self.setup_views(dataset, d, device)
        graphs = {m: similarity_knn_graph(dataset.item_features[m].to(device), config["knn_k"]) for m in self.modalities}
        graphs[FUSION] = max_pool(list(graphs.values()))
        for part, graph in graphs.items():
            self.register_buffer(f"item_graph_{part}", graph, persistent=False)
            self.register_buffer(f"item_graph_t_{part}", csr_transpose(graph), persistent=False)

        self.filters = nn.ParameterDict({p: nn.Parameter(torch.randn(1, d // 2 + 1, 2)) for p in self.parts})
        self.purifiers = nn.ModuleDict({p: nn.Sequential(nn.Linear(d, d), nn.Sigmoid()) for p in self.parts})
        self.preferences = nn.ModuleDict({p: nn.Sequential(nn.Linear(d, d), nn.Sigmoid()) for p in self.parts})
        self.queries = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d, bias=False))
                                      for m in self.modalities})
        self.gate_dropout = nn.Dropout(config["dropout_rate"])

    def spectra(self):
        """``{part: filtered representation [n_items, d]}`` of every modality and of their fusion."""
        d = self.embedding_size
        spectrum = {m: torch.fft.rfft(self.projections[m](self.modality_embeddings[m].weight), dim=1, norm="ortho")
                    for m in self.modalities}
        fused = spectrum[self.modalities[0]]
        for m in self.modalities[1:]:
            fused = fused * spectrum[m]
        spectrum[FUSION] = fused
        return {p: torch.fft.irfft(s * torch.view_as_complex(self.filters[p]), n=d, dim=1, norm="ortho")
                for p, s in spectrum.items()}

    def views(self, rows=None):
        """``(final, side, ID view)``, [n_users + n_items, d] each (users first), or their ``rows``."""
        ids = self.item_id_embedding.weight
        content = torch.cat(self.encoder(self.user_embedding.weight, ids))
        views = {}
        for part, filtered in self.spectra().items():
            h = ids * self.purifiers[part](filtered)
            for _ in range(self.n_layers):
                h = graph_product(getattr(self, f"item_graph_{part}"), h, getattr(self, f"item_graph_t_{part}"))
            views[part] = torch.cat([graph_product(self.user_item, h, self.user_item_t), h])
        if rows is not None:
            content, views = content[rows], {part: view[rows] for part, view in views.items()}
        fusion = views[FUSION]
        parts = [self.gate_dropout(self.preferences[m](content)) * torch.softmax(self.queries[m](fusion), dim=-1)
                 * views[m] for m in self.modalities]
        parts.append(self.gate_dropout(self.preferences[FUSION](content)) * fusion)
        side = torch.stack(parts).mean(0)
        return content + side, side, content
