"""Retrieval primitives shared by the embedding models."""

from .topk import top_k_inner_product

__all__ = ["top_k_inner_product"]
