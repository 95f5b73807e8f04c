r"""
DualGNN
################################################
Reference:
    Qifan Wang, Yinwei Wei, Jianhua Yin, Jianlong Wu, Xuemeng Song and Liqiang Nie. "DualGNN: Dual Graph
    Neural Network for Multimedia Recommendation." IEEE Transactions on Multimedia 25, 2021.

As the authors' code in MMRec (``dualgnn.py``) computes it, which DRAGON later extended; the shared parts are
``DRAGON``'s (``dragon.py``):

* Single-modal representation learning (section III-B), per modality m: items as MLP(f_m), users as a
  trained preference vector, x = normalize([p_u; MLP(f_i)]), x_m = x + A x + A^2 x over the symmetrically
  normalised user-item graph.
* Multi-modal fusion (section III-C, the "weighted sum" construction): items sum_m x_m, users
  sum_m a_um x_m with trained per-user modality weights.
* User co-occurrence graph (section III-D): each user's ``user_graph_k`` users with the most items in
  common, softmax weights, resampled every epoch; the aggregation is added to the users. Built by the plugin
  from the training split and cached with the dataset build.
* Loss: -mean log2 sigmoid(y_ui - y_uj) plus ``reg_weight`` times the mean squared preference vectors of
  the batch's users and the mean squared user modality weights. (MMRec also regularises an item
  modality weight that its DualGNN never uses; it is left out.)
"""
from recbole_robust.model.general_recommender.dragon import DRAGON


class DualGNN(DRAGON):
    r"""DualGNN: per-modality GCNs on the user-item graph, weighted-sum fusion, user co-occurrence graph."""

    fusion = "sum"
    item_item_graph = False
