"""The TopK temporal pooling op in every runtime, with one NumPy reference as the oracle.

Importing this package registers ``torch.ops.sfc.topk_temporal_pool``, and its CUDA kernel for
CUDA tensors where the kernel library is found (a file check only: see
:mod:`sfc_deploy.ops.cuda_dispatch`, which also says which implementation CUDA tensors run).
"""

from sfc_deploy.ops.topk_temporal_pool import (
    topk_temporal_indices,
    topk_temporal_pool,
    topk_temporal_pool_aten,
    topk_temporal_pool_reference,
    topk_temporal_select,
)
from sfc_deploy.ops.cuda_dispatch import (  # noqa: E402  (after the op it registers a kernel for)
    cuda_implementation,
    cuda_implementation_record,
    use_aten,
    use_cuda_kernel,
)

__all__ = [
    "cuda_implementation",
    "cuda_implementation_record",
    "topk_temporal_indices",
    "topk_temporal_pool",
    "topk_temporal_pool_aten",
    "topk_temporal_pool_reference",
    "topk_temporal_select",
    "use_aten",
    "use_cuda_kernel",
]
