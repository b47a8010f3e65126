"""The two-tower networks' common parts: the interface every family implements, its building blocks (the
schema's embedding tables with pooling, the MLP) and how a network is rebuilt from its JSON spec (in the
training processes, and on the executors after ``load``).

A family registers its network class with ``@register_network("<family>")`` where it defines it
(``dssm.py``, ``simplex.py``). Importing any module of this package imports the package first, and its
``__init__`` imports every family, so a process that unpickles a training job or an embedding function
finds every network registered.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch import nn

from .schema import Feature, FeatureSchema, encoded_column

EMBEDDING_INIT_STD = 0.05
NETWORKS: dict[str, type["TwoTowerNetwork"]] = {}


# torch reads it once, at the first CPU operation of a process; set it (e.g. to "avx512") to opt out of the pin.
CPU_CAPABILITY_VARIABLE = "ATEN_CPU_CAPABILITY"
PINNED_CPU_CAPABILITY = "avx2"


def pin_cpu_capability() -> None:
    """``ATEN_CPU_CAPABILITY=avx2`` unless set, in a process that has run no torch operation yet: the same
    kernels, so the same numbers, on AVX2 and AVX-512 CPUs (see ``training.py``)."""
    os.environ.setdefault(CPU_CAPABILITY_VARIABLE, PINNED_CPU_CAPABILITY)


class TwoTowerNetwork(nn.Module):
    """A user tower and an item tower mapping encoded features (keyed by encoded column) to vectors.

    ``cosine``: True when both towers return unit vectors, so inner product = cosine similarity.
    """

    cosine: bool = False

    def __init__(self, schema: FeatureSchema):
        super().__init__()
        self.schema = schema

    def user_vectors(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def item_vectors(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def input_columns(self, tower: str) -> list[str]:
        return [encoded_column(f) for f in self.schema.tower(tower)]


def register_network(family: str) -> Callable[[type["TwoTowerNetwork"]], type["TwoTowerNetwork"]]:
    """Class decorator: ``build_network`` builds ``family``'s specs with the decorated class."""

    def register(network_class: type[TwoTowerNetwork]) -> type[TwoTowerNetwork]:
        NETWORKS[family] = network_class
        return network_class

    return register


def network_spec(family: str, schema: FeatureSchema, vocabulary_sizes: dict[str, int], **options: Any) -> dict[str, Any]:
    """Everything needed to rebuild the network (before loading its weights), as plain JSON."""
    return {"family": family, "schema": schema.to_dict(), "vocabulary_sizes": dict(vocabulary_sizes), "options": options}


def build_network(spec: dict[str, Any]) -> TwoTowerNetwork:
    family = spec["family"]
    if family not in NETWORKS:
        raise ValueError(f"no two-tower network is registered for family {family!r} (known: {', '.join(sorted(NETWORKS))})")
    schema = FeatureSchema.from_dict(spec["schema"])
    return NETWORKS[family](schema, spec["vocabulary_sizes"], **spec["options"])


# -- building blocks -------------------------------------------------------------------------------
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
