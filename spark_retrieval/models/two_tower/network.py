"""What every two-tower network offers, and how one is rebuilt from its JSON spec (in workers, after load)."""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from .schema import FeatureSchema, encoded_column

# family → module:class; imported lazily so each model's module stays the single place it is defined.
NETWORKS = {
    "dssm": "spark_retrieval.models.two_tower.dssm:DSSMNetwork",
    "simplex": "spark_retrieval.models.two_tower.simplex:SimpleXNetwork",
}


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


def network_spec(family: str, schema: FeatureSchema, vocabulary_sizes: dict[str, int], **options: Any) -> dict[str, Any]:
    """Everything needed to rebuild the network (before loading its weights), as plain JSON."""
    return {"family": family, "schema": schema.to_dict(), "vocabulary_sizes": dict(vocabulary_sizes), "options": options}


def build_network(spec: dict[str, Any]) -> TwoTowerNetwork:
    module_name, _, class_name = NETWORKS[spec["family"]].partition(":")
    network_class = getattr(importlib.import_module(module_name), class_name)
    schema = FeatureSchema.from_dict(spec["schema"])
    return network_class(schema, spec["vocabulary_sizes"], **spec["options"])
