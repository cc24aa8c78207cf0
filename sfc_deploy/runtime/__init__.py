"""Runners (one per backend, one interface) and the SFC / clip pipelines built from them.

``load(DIR, runtime="onnxruntime")`` opens an export folder; ``predict`` runs head -> SFC -> tail
and ``predict_dense`` the 30-crop baseline, on the same backend. Backends import lazily, so this
package loads without TensorRT or CUDA.
"""

from sfc_deploy.runtime.base import Runner, check_feed
from sfc_deploy.runtime.pipeline import ClipPipeline, Deployment, SFCPipeline, load
from sfc_deploy.runtime.registry import make_runner

__all__ = ["Runner", "check_feed", "ClipPipeline", "Deployment", "SFCPipeline", "load", "make_runner"]
