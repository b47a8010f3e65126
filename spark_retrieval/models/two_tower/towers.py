"""Building blocks of the towers: the schema's embedding tables with pooling, and the MLP."""

from __future__ import annotations

import torch
from torch import nn

from .schema import Feature, FeatureSchema

EMBEDDING_INIT_STD = 0.05


class FeatureEmbeddings(nn.Module):
    """One table per schema embedding (shared tables appear once); row 0 is unknown/padding.

    A categorical feature gives its row; a list feature (ids right-padded with 0) the mean of its
    non-padding rows, or zeros when it has none.
    """

    def __init__(self, schema: FeatureSchema, vocabulary_sizes: dict[str, int]):
        super().__init__()
        self.tables = nn.ModuleDict()
        for name, (vocabulary, dim) in schema.embeddings().items():
            table = nn.Embedding(vocabulary_sizes[vocabulary] + 1, dim)
            nn.init.normal_(table.weight, std=EMBEDDING_INIT_STD)
            self.tables[table_key(name)] = table

    def forward(self, feature: Feature, ids: torch.Tensor) -> torch.Tensor:
        vectors = self.tables[table_key(feature.embedding)](ids)
        if not feature.is_list:
            return vectors
        mask = (ids > 0).unsqueeze(-1).to(vectors.dtype)
        return (vectors * mask).sum(dim=-2) / mask.sum(dim=-2).clamp(min=1.0)


def table_key(embedding: str) -> str:
    # ModuleDict keys may not contain dots.
    return embedding.replace(".", "__")


def mlp(input_dim: int, layer_dims: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear → ReLU (→ dropout) for every layer but the last, which stays linear (it is the output vector)."""
    layers: list[nn.Module] = []
    for position, dim in enumerate(layer_dims):
        layers.append(nn.Linear(input_dim, dim))
        if position < len(layer_dims) - 1:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        input_dim = dim
    return nn.Sequential(*layers)
