"""Verification: every artifact compared with the PyTorch model it came from.

It sits above export (which produces artifacts) and runtime (which runs them), and compares the
two; the tolerance table here is the one every test uses too.
"""

from sfc_deploy.verify.parity import Check, NotRun, VerifyReport, synthetic_video, verify
from sfc_deploy.verify.tolerances import TOLERANCES, compare, topk_agreement

__all__ = ["Check", "NotRun", "TOLERANCES", "VerifyReport", "compare", "synthetic_video", "topk_agreement", "verify"]
