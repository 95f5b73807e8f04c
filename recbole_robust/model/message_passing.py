"""PyTorch Geometric ``MessagePassing`` layers for GRCN's per-edge work (routing, attention, weighted sums over the
refined graph). GRCN imports this module when it is built: PyG takes seconds to import, and no other model needs
it."""
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax


class WeightedSumConv(MessagePassing):
    """x' = sum_{j in N(i)} w_ji x_j (GRCN's convolution on the refined graph)."""

    def __init__(self):
        super().__init__(aggr="add")

    def forward(self, x, edge_index, edge_weight):
        return self.propagate(edge_index, x=x, edge_weight=edge_weight)

    def message(self, x_j, edge_weight):
        return x_j * edge_weight.view(-1, 1)


class DotAttentionConv(MessagePassing):
    """x' = sum_j alpha_ij x_j, alpha_ij = softmax_j(x_i . x_j) (GRCN's routing / attention layer).

    The attention of the last call is kept in ``alpha`` (one value per edge).
    """

    def __init__(self):
        super().__init__(aggr="add")
        self.alpha = None

    def forward(self, x, edge_index):
        return self.propagate(edge_index, x=x)

    def message(self, x_i, x_j, index, size_i):
        self.alpha = softmax((x_i * x_j).sum(-1), index, num_nodes=size_i)
        return x_j * self.alpha.view(-1, 1)
