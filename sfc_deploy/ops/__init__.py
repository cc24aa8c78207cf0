"""The TopK temporal pooling op in every runtime, with one NumPy reference as the oracle."""

from sfc_deploy.ops.topk_temporal_pool import (
    topk_temporal_indices,
    topk_temporal_pool,
    topk_temporal_pool_reference,
)

__all__ = ["topk_temporal_indices", "topk_temporal_pool", "topk_temporal_pool_reference"]
