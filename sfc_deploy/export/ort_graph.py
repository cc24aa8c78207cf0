"""The graph ONNX Runtime serves, written at export time as an artifact of its own.

Two rewrites make an exported ONNX part fast (or at all runnable) on ONNX Runtime. They used to be
applied in memory each time a runner loaded a graph, so the bytes that ran were not the bytes whose
sha256 the manifest checks and that verification compared with PyTorch. Writing the result as its
own file makes it an artifact like the others: hashed, verified against PyTorch, and loaded as is.

* **Time folding.** ONNX Runtime's CPU provider has blocked-layout (NCHWc) kernels, Conv+Add+Relu
  fusion and AVX-512 paths only for 2D convolutions; a 3D one goes through a generic im2col + GEMM.
  In a slow-only network most convolutions have a temporal kernel of 1 (the stem, res2, res3, the
  1x3x3 and 1x1x1 convs of res4/res5, SFC's abstraction): on a (N, C, T, H, W) tensor they are
  exactly 2D convolutions of the (N*T, C, H, W) tensor. Every such Conv/MaxPool/AveragePool, and
  the element-wise ops between them, runs in that folded form; a temporal-only (kt, 1, 1) conv runs
  as a (kt, 1) 2D conv of the free reshape (N, C, T, H*W). Transpose+Reshape are inserted only where
  the layout has to change, from shapes read at run time, so batch and time stay dynamic. Outputs
  are identical up to float rounding; ONNX Runtime runs the tiny model's head, tail and clip model
  1.4-1.6x faster this way (CPU, one thread).
* **The custom op.** ``sfc::TopKTemporalPool`` (the TensorRT plugin's node) moves to
  onnxruntime-extensions' domain, where :mod:`sfc_deploy.runtime.ort_custom_op` registers the NumPy
  reference. The extensions' Python ops have no float16, so in a half-precision graph the node is
  wrapped in Casts to float32 and back: exact, as the op only selects values.

The rewrite is done with ``onnx_ir`` (the IR of onnxscript's optimizer and rewriter), not by editing
protobuf: values know their producer and consumers, so rewiring cannot leave a dangling name.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx_ir as ir

from sfc_deploy.common.atomic import atomic_write
from sfc_deploy.export.manifest import sha256_of
from sfc_deploy.export.onnx import DOMAIN, OP_TYPE, check_onnx, register_schema

#: onnxruntime-extensions' ``default_opset_domain()``, where its Python custom ops live
EXTENSIONS_DOMAIN = "ai.onnx.contrib"
#: metadata_props the served graph adds to those of its source
SERVED_BY = "sfc_deploy.served_by"
DERIVED_FROM = "sfc_deploy.derived_from"
DERIVED_SHA256 = "sfc_deploy.derived_from_sha256"

#: element-wise ops that act the same on either layout when all their inputs are (folded) activations
ELEMENTWISE = frozenset({"Relu", "Add", "Sum", "Mul", "Sigmoid", "Clip", "LeakyRelu"})
SPATIAL = frozenset({"Conv", "MaxPool", "AveragePool"})
_SWAP_CT = (0, 2, 1, 3, 4)  # (N, C, T, H, W) <-> (N, T, C, H, W)


def write_ort_graph(src: str | Path, dst: str | Path) -> Path:
    """Write the graph ONNX Runtime serves for the exported ONNX file ``src`` to ``dst`` (atomically).

    ``dst`` keeps ``src``'s input and output names and metadata_props and adds ``sfc_deploy.served_by``
    (``onnxruntime``), ``sfc_deploy.derived_from`` (``src``'s file name) and its sha256. It is checked
    with ``onnx.checker`` (full check, except for a graph in the extensions' domain, whose op has no
    ONNX schema) before it takes the place of ``dst``; a failure leaves nothing behind.
    """
    src, dst = Path(src), Path(dst)
    model = rewrite_for_ort(ir.load(src), source=src.name, source_sha256=sha256_of(src))

    def write(tmp: Path) -> None:
        ir.save(model, tmp)
        check_ort_graph(tmp)

    return atomic_write(dst, write, suffix=".onnx")


def rewrite_for_ort(model: ir.Model, *, source: str, source_sha256: str | None = None) -> ir.Model:
    """Both rewrites of the module doc on ``model``, plus provenance; the rewritten model is returned
    (``model`` itself, changed in place, unless shape inference had to run for the custom op)."""
    model = use_extensions_domain(fold_time(model))
    model.metadata_props[SERVED_BY] = "onnxruntime"
    model.metadata_props[DERIVED_FROM] = source
    if source_sha256:
        model.metadata_props[DERIVED_SHA256] = source_sha256
    return model


def check_ort_graph(path: str | Path) -> None:
    """``onnx.checker`` on a served graph: the full check unless the graph uses the extensions' domain."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if any(imp.domain == EXTENSIONS_DOMAIN for imp in model.opset_import):
        onnx.checker.check_model(model)  # structure only: ONNX has no schema for the extensions' op
    else:
        check_onnx(path)


# --- time folding --------------------------------------------------------------------------------
def _ints(node: ir.Node, name: str, default: Iterable[int]) -> list[int]:
    attr = node.attributes.get(name)
    return list(attr.value) if attr is not None else list(default)


def _weight_shape(node: ir.Node) -> tuple[int, ...] | None:
    """The shape of a Conv's 5D weight when it is a constant initializer (not one a caller may override)."""
    w = node.inputs[1] if len(node.inputs) > 1 else None
    if w is None or w.const_value is None or w.is_graph_input() or len(w.const_value.shape) != 5:
        return None
    return tuple(w.const_value.shape)


def _plain_padding(node: ir.Node) -> bool:
    return node.attributes.get_string("auto_pad", "NOTSET") in ("NOTSET", "VALID")


def _unit_time(node: ir.Node) -> bool:
    """A Conv/pool over 5D tensors whose temporal kernel, stride and padding are 1, 1 and 0."""
    if node.domain or node.op_type not in SPATIAL or len(node.outputs) != 1 or not _plain_padding(node):
        return False
    if node.op_type == "Conv":
        shape = _weight_shape(node)
        if shape is None:
            return False
        kernel = list(shape[2:])
    else:
        kernel = _ints(node, "kernel_shape", ())
        if len(kernel) != 3 or node.attributes.get_int("ceil_mode", 0) or node.attributes.get_int("storage_order", 0):
            return False
    strides, pads = _ints(node, "strides", [1] * 3), _ints(node, "pads", [0] * 6)
    return kernel[0] == 1 and strides[0] == 1 and pads[0] == 0 and pads[3] == 0


def _temporal_only(node: ir.Node) -> bool:
    """A Conv with kernel (kt, 1, 1), unit spatial strides and no spatial padding."""
    if node.domain or node.op_type != "Conv" or not _plain_padding(node):
        return False
    shape, pads = _weight_shape(node), _ints(node, "pads", [0] * 6)
    return (shape is not None and shape[3:] == (1, 1) and _ints(node, "strides", [1] * 3)[1:] == [1, 1]
            and pads[1:3] == [0, 0] and pads[4:6] == [0, 0])


def _same_batch_and_time(values: list[ir.Value]) -> bool:
    """No two of ``values`` are known to differ in axis 0 or 2 (unknown dims are taken to agree)."""
    seen: dict[int, int | str] = {}
    for v in values:
        if v.shape is None or len(v.shape) != 5:
            continue
        for axis in (0, 2):
            dim = v.shape[axis]
            key = dim if isinstance(dim, int) else dim.value
            if key is not None and seen.setdefault(axis, key) != key:
                return False
    return True


def _attributes_2d(node: ir.Node, *, temporal: bool) -> list[ir.Attr]:
    """The node's attributes with the (unit) temporal entry dropped, or with the (unit) spatial ones
    merged into one for a temporal-only conv over (T, H*W)."""
    out = []
    for name, attr in node.attributes.items():
        value = attr.value
        if name in ("kernel_shape", "strides", "dilations"):
            value = [value[0], 1] if temporal else list(value[1:])
        elif name == "pads":
            value = [value[0], 0, value[3], 0] if temporal else [value[1], value[2], value[4], value[5]]
        else:
            out.append(ir.Attr(name, attr.type, value))
            continue
        out.append(ir.AttrInt64s(name, value))
    return out


class _Folder:
    """Rewrites one graph; names every value it adds (``__ort<k>_...``) so none can clash."""

    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.counter = 0
        self.folded: dict[ir.Value, tuple[ir.Value, ir.Value]] = {}  # 5D value -> (its 2D form, its [N, T])
        self.weights: dict[tuple[ir.Value, bool], ir.Value] = {}
        self.neg1 = self._const("neg1", [-1])

    def _name(self, what: str) -> str:
        self.counter += 1
        return f"__ort{self.counter}_{what}"

    def _const(self, what: str, values: list[int]) -> ir.Value:
        name = self._name(what)
        value = ir.Value(name=name, const_value=ir.tensor(np.asarray(values, dtype=np.int64), name=name))
        self.graph.register_initializer(value)
        return value

    def _op(self, nodes: list[ir.Node], op_type: str, inputs: list[ir.Value], what: str, **attributes) -> ir.Value:
        node = ir.node(op_type, inputs, attributes, name=self._name(what))
        node.outputs[0].name = node.name
        nodes.append(node)
        return node.outputs[0]

    def _weight_2d(self, w: ir.Value, *, temporal: bool) -> ir.Value:
        """The squeezed copy of a 5D weight (a new initializer, shared by every 2D conv using it)."""
        if (w, temporal) not in self.weights:
            array = w.const_value.numpy()
            array = np.ascontiguousarray(array[..., 0] if temporal else array[:, :, 0])
            name = self._name(f"{w.name}_2d")
            value = ir.Value(name=name, const_value=ir.tensor(array, name=name))
            self.graph.register_initializer(value)
            self.weights[w, temporal] = value
        return self.weights[w, temporal]

    def fold(self, x: ir.Value, nodes: list[ir.Node]) -> tuple[ir.Value, ir.Value]:
        """(N, C, T, H, W) -> (N*T, C, H, W), once per value."""
        if x not in self.folded:
            t = self._op(nodes, "Transpose", [x], "ntchw", perm=_SWAP_CT)
            nt = self._op(nodes, "Shape", [t], "nt", start=0, end=2)
            chw = self._op(nodes, "Shape", [t], "chw", start=2)
            target = self._op(nodes, "Concat", [self.neg1, chw], "fold_shape", axis=0)
            self.folded[x] = (self._op(nodes, "Reshape", [t, target], "folded"), nt)
        return self.folded[x]

    def unfold(self, y2: ir.Value, nt: ir.Value, nodes: list[ir.Node]) -> ir.Value:
        """(N*T, C, H, W) -> (N, C, T, H, W)."""
        chw = self._op(nodes, "Shape", [y2], "chw", start=1)
        target = self._op(nodes, "Concat", [nt, chw], "unfold_shape", axis=0)
        ntchw = self._op(nodes, "Reshape", [y2, target], "ntchw")
        return self._op(nodes, "Transpose", [ntchw], "unfolded", perm=_SWAP_CT)

    def foldable(self, node: ir.Node) -> bool:
        if node.op_type in SPATIAL:
            return _unit_time(node)
        # element-wise: only between tensors already folded (never a scalar or a constant) whose
        # batch and time agree: (N, C, 1, H, W) * (N, C, T, H, W) broadcasts, its folded form does not
        inputs = [i for i in node.inputs if i is not None]
        return (not node.domain and node.op_type in ELEMENTWISE
                and all(i in self.folded for i in inputs) and _same_batch_and_time(inputs))

    def to_2d(self, node: ir.Node) -> None:
        """Insert ``node``'s 2D form before it (its activations folded first) and record its outputs."""
        nodes: list[ir.Node] = []
        inputs, nt = [], None
        for i, x in enumerate(node.inputs):
            if node.op_type == "Conv" and i > 0:  # the weight is squeezed, the bias stays
                inputs.append(self._weight_2d(x, temporal=False) if i == 1 else x)
            elif x is None:
                inputs.append(None)
            else:
                x2, x_nt = self.fold(x, nodes)
                inputs.append(x2)
                nt = x_nt if nt is None else nt
        attributes = _attributes_2d(node, temporal=False) if node.op_type in SPATIAL else list(node.attributes.values())
        new = ir.Node("", node.op_type, inputs, [ir.Attr(a.name, a.type, a.value) for a in attributes],
                      num_outputs=len(node.outputs), name=self._name(node.op_type))
        nodes.append(new)
        for old, out in zip(node.outputs, new.outputs):
            out.name = f"{old.name}__2d"
            if old.dtype is not None:
                out.dtype = old.dtype
            self.folded[old] = (out, nt)
        self.graph.insert_before(node, nodes)

    def temporal_to_2d(self, node: ir.Node) -> None:
        """(kt,1,1) Conv on (N, C, T, H, W) = (kt,1) Conv on the free reshape (N, C, T, H*W)."""
        nodes: list[ir.Node] = []
        x, w, *bias = node.inputs
        nct = self._op(nodes, "Shape", [x], "nct", end=3)
        hw = self._op(nodes, "Shape", [x], "hw", start=3)
        x4 = self._op(nodes, "Reshape", [x, self._op(nodes, "Concat", [nct, self.neg1], "flat_shape", axis=0)], "x4")
        conv = ir.Node("", "Conv", [x4, self._weight_2d(w, temporal=True), *bias], _attributes_2d(node, temporal=True),
                       name=self._name("Conv"))
        conv.outputs[0].name = conv.name
        nodes.append(conv)
        y_nct = self._op(nodes, "Shape", [conv.outputs[0]], "y_nct", end=3)
        target = self._op(nodes, "Concat", [y_nct, hw], "y_shape", axis=0)
        y = self._op(nodes, "Reshape", [conv.outputs[0], target], "y")
        self.graph.insert_before(node, nodes)
        _take_place(node.outputs[0], y)


def _take_place(old: ir.Value, new: ir.Value) -> None:
    """``new`` replaces ``old`` everywhere (graph outputs too) and takes its name, type and shape."""
    name = old.name
    old.name = f"{name}__replaced"
    new.name, new.type, new.shape = name, old.type, old.shape
    old.replace_all_uses_with(new, replace_graph_outputs=True)


def fold_time(model: ir.Model) -> ir.Model:
    """Run unit-time-kernel 3D ops as 2D ops of the time-folded tensor (see the module doc).

    ``model`` is changed in place and returned; a graph with nothing to fold is left untouched, and
    so is one below opset 15 (whose Shape has no start/end).
    """
    graph = model.graph
    if graph.opset_imports.get("", 0) < 15 or not any(_unit_time(n) or _temporal_only(n) for n in graph):
        return model
    folder = _Folder(graph)
    replaced: list[ir.Node] = []
    for node in list(graph):
        if folder.foldable(node):
            folder.to_2d(node)
        elif _temporal_only(node):
            folder.temporal_to_2d(node)
        else:
            continue
        replaced.append(node)
    for node in replaced:  # no longer a consumer of anything: what still uses its outputs needs 5D
        for i in range(len(node.inputs)):
            node.replace_input_with(i, None)
    for node in replaced:
        for old in node.outputs:
            if old in folder.folded and (old.uses() or old.is_graph_output()):
                y2, nt = folder.folded[old]
                nodes: list[ir.Node] = []
                _take_place(old, folder.unfold(y2, nt, nodes))
                graph.insert_after(y2.producer(), nodes)
    graph.remove(replaced, safe=True)
    for key in [k for k, v in graph.initializers.items() if not v.uses() and not v.is_graph_output()]:
        graph.initializers.pop(key)  # the 5D weights every user of which now has the 2D copy
    return model


# --- the custom op ------------------------------------------------------------------------------
def use_extensions_domain(model: ir.Model) -> ir.Model:
    """Move ``sfc::TopKTemporalPool`` to onnxruntime-extensions' domain, wrapping a non-fp32 one in
    exact Casts (the extensions' Python ops take float32 only). ``model`` is changed in place and
    returned, unless the element type of a node's input is unknown: then shape inference runs first
    and its result is changed and returned."""
    graph = model.graph
    nodes = [n for n in graph if n.domain == DOMAIN and n.op_type == OP_TYPE]
    if not nodes:
        return model
    if any(n.inputs[0].dtype is None for n in nodes):
        from onnx_ir.passes.common import ShapeInferencePass

        register_schema()
        model = ShapeInferencePass()(model).model
        graph = model.graph
        nodes = [n for n in graph if n.domain == DOMAIN and n.op_type == OP_TYPE]
    for k, node in enumerate(nodes):
        x, (y,) = node.inputs[0], node.outputs
        if x.dtype is None or y.dtype is None:
            raise ValueError(f"the element type of {OP_TYPE} node {node.name!r}'s input or output is unknown")
        added: list[ir.Node] = []
        if x.dtype != ir.DataType.FLOAT:
            added.append(ir.node("Cast", [x], {"to": ir.DataType.FLOAT}, name=f"__ort_topk{k}_to_fp32"))
            x = added[-1].outputs[0]
            x.name = f"{node.inputs[0].name}__fp32"
        attributes = [ir.Attr(a.name, a.type, a.value) for a in node.attributes.values()]
        added.append(ir.Node(EXTENSIONS_DOMAIN, OP_TYPE, [x], attributes, name=node.name or f"__ort_topk{k}"))
        if y.dtype != ir.DataType.FLOAT:
            added[-1].outputs[0].name = f"{y.name}__fp32"
            added.append(ir.node("Cast", [added[-1].outputs[0]], {"to": y.dtype}, name=f"__ort_topk{k}_from_fp32"))
        graph.insert_before(node, added)
        _take_place(y, added[-1].outputs[0])
        graph.remove(node, safe=True)
    graph.opset_imports.pop(DOMAIN, None)
    graph.opset_imports[EXTENSIONS_DOMAIN] = 1
    return model


__all__ = ["EXTENSIONS_DOMAIN", "check_ort_graph", "fold_time", "rewrite_for_ort", "use_extensions_domain",
           "write_ort_graph"]
