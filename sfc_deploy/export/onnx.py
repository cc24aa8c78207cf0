"""ONNX export with the dynamo exporter (``torch.onnx.export(..., dynamo=True)``).

The TopK pooling node is emitted two ways (SPEC section 4):

* ``custom``: one node ``sfc::TopKTemporalPool`` (domain ``sfc``, version 1, attributes ``k``,
  ``axis=2``, ``plugin_namespace="sfc"``, ``plugin_version="1"``) for the TensorRT plugin. Its ``k``
  is an attribute, so this graph has a fixed time axis.
* ``portable``: ``TopK(largest)`` -> ``TopK(smallest)`` of the indices (restores time order) ->
  ``GatherElements``: standard ops only, dynamic time, runs on ONNX Runtime and builds natively in
  TensorRT (K <= 3840).

An ONNX schema for the custom op is registered in-process so that the exporter and
``onnx.checker`` (full check) accept the node.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import onnx
import torch

from sfc_deploy.common.atomic import atomic_write
from sfc_deploy.export.manifest import MANIFEST_VERSION
from sfc_deploy.export.parts import Part

DOMAIN = "sfc"
OP_TYPE = "TopKTemporalPool"
OP_VERSION = 1
OPSET = 18


def register_schema() -> None:
    """Register ``sfc::TopKTemporalPool`` with ONNX (idempotent)."""
    from onnx.defs import OpSchema, has, register_schema as _register

    if has(OP_TYPE, DOMAIN):
        return
    _register(
        OpSchema(
            OP_TYPE,
            DOMAIN,
            OP_VERSION,
            doc="Keep the k largest values along `axis` in their original order; ties to the lower index.",
            inputs=[OpSchema.FormalParameter("x", "T")],
            outputs=[OpSchema.FormalParameter("y", "T")],
            type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "floating point")],
            attributes=[
                OpSchema.Attribute("k", OpSchema.AttrType.INT, "values kept along the axis", required=True),
                OpSchema.Attribute("axis", OpSchema.AttrType.INT, "the time axis (2)", required=False),
                OpSchema.Attribute("plugin_namespace", OpSchema.AttrType.STRING, "TensorRT plugin namespace", required=False),
                OpSchema.Attribute("plugin_version", OpSchema.AttrType.STRING, "TensorRT plugin version", required=False),
            ],
        )
    )


def _translation_table(variant: str) -> dict:
    import onnxscript
    from onnxscript import opset18 as op

    register_schema()
    sfc_opset = onnxscript.values.Opset(DOMAIN, OP_VERSION)

    def topk_custom(x, k: int):
        if not isinstance(k, int):
            raise TypeError("the custom TopKTemporalPool node needs a static k; export it with a fixed time axis")
        return sfc_opset.TopKTemporalPool(x, k=k, axis=2, plugin_namespace="sfc", plugin_version="1")

    def topk_portable(x, k):
        kk = op.Constant(value_ints=[k]) if isinstance(k, int) else op.Reshape(k, op.Constant(value_ints=[1]))
        _, idx = op.TopK(x, kk, axis=2, largest=1, sorted=1)
        in_order, _ = op.TopK(idx, kk, axis=2, largest=0, sorted=1)
        return op.GatherElements(x, in_order, axis=2)

    fn = topk_custom if variant == "custom" else topk_portable
    return {torch.ops.sfc.topk_temporal_pool.default: fn}


def export_onnx(part: Part, path: Path, *, variant: str = "portable", metadata: dict | None = None) -> Path:
    """Export one part to ``path`` (atomically), with metadata_props, and check it (full check)."""
    # the exporter logs one warning per torchvision op it cannot register (torchvision is not needed)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            part.module.eval(),
            part.example,
            dynamo=True,
            input_names=[t.name for t in part.inputs],
            output_names=[t.name for t in part.outputs],
            dynamic_shapes=part.dynamic or None,
            custom_translation_table=_translation_table(variant),
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    model = program.model_proto
    props = {
        "sfc_deploy.part": part.name,
        "sfc_deploy.variant": variant,
        "sfc_deploy.manifest_version": str(MANIFEST_VERSION),
        **{f"sfc_deploy.{k}": v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()},
    }
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)

    def write(tmp: Path) -> None:
        onnx.save(model, tmp)
        check_onnx(tmp)  # a model that fails the check never takes the place of ``path``

    return atomic_write(path, write, suffix=".onnx")


def check_onnx(path: str | Path) -> None:
    """``onnx.checker`` full check (with shape inference); the custom op's schema is registered first."""
    register_schema()
    onnx.checker.check_model(str(path), full_check=True)
