"""Fold time into the batch so ONNX Runtime runs slow-only convolutions on its fast 2D path.

ONNX Runtime's CPU provider has blocked-layout (NCHWc) kernels, Conv+Add+Relu fusion and AVX-512
paths only for 2D convolutions; a 3D convolution goes through a generic im2col + GEMM. In a
slow-only network most convolutions have a temporal kernel of 1 (the stem, res2, res3, the 1x3x3
and 1x1x1 convs of res4/res5, SFC's abstraction): on a (N, C, T, H, W) tensor they are exactly 2D
convolutions of the (N*T, C, H, W) tensor. This rewrite, applied to the loaded graph before the
session is built, turns every such Conv/MaxPool (and the element-wise ops between them) into its
2D form and inserts Transpose+Reshape only where the layout has to change (graph inputs/outputs,
temporal convs, pooling over time). Outputs are identical up to float rounding.

It is applied to every graph a runner loads (SFC's parts and the dense clip model alike), so the
baseline gets the same speed-up wherever its operators allow it.
"""

from __future__ import annotations

import numpy as np

#: element-wise ops that act the same on either layout when all their inputs are activations
ELEMENTWISE = {"Relu", "Add", "Sum", "Mul", "Sigmoid", "Clip", "LeakyRelu"}
FOLDABLE_SPATIAL = {"Conv", "MaxPool", "AveragePool"}


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _kernel_t1(node, inits: dict) -> bool:
    """A Conv/pool over 5D tensors whose temporal kernel, stride and padding are 1, 1 and 0."""
    a = _attrs(node)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return False
    if node.op_type == "Conv":
        w = inits.get(node.input[1])
        if w is None or len(w.dims) != 5:
            return False
        kernel = list(a.get("kernel_shape", w.dims[2:]))
    else:
        kernel = list(a.get("kernel_shape", []))
        if len(kernel) != 3 or a.get("ceil_mode", 0) or "storage_order" in a and a["storage_order"]:
            return False
    strides = list(a.get("strides", [1, 1, 1]))
    pads = list(a.get("pads", [0] * 6))
    return len(kernel) == 3 and kernel[0] == 1 and strides[0] == 1 and pads[0] == 0 and pads[3] == 0


def fold_time(model):
    """Rewrite ``model`` (an ``onnx.ModelProto``, changed in place and returned); see the module doc."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    uses: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            uses.setdefault(i, []).append(n)

    def foldable(n) -> bool:
        if n.op_type in FOLDABLE_SPATIAL:
            if not _kernel_t1(n, inits):
                return False
            # a weight shared with a node that stays 3D cannot be squeezed in place
            return n.op_type != "Conv" or all(u.op_type == "Conv" and _kernel_t1(u, inits) for u in uses[n.input[1]])
        # element-wise: only between tensors that are already folded (never a scalar or a constant)
        return n.op_type in ELEMENTWISE and all(i in folded for i in n.input if i)

    if not any(n.op_type in FOLDABLE_SPATIAL and foldable(n) for n in g.node):
        return model
    const = lambda name, vals: numpy_helper.from_array(np.asarray(vals, dtype=np.int64), name)  # noqa: E731
    g.initializer.extend([const("__fold_nt_idx", [0, 2]), const("__fold_end4", [4]), const("__fold_neg1", [-1]),
                          const("__fold_c_idx", [1]), const("__fold_hw_idx", [3, 4]), const("__fold_zero", [0]),
                          const("__fold_three", [3]), const("__fold_end5", [5])])
    folded: dict[str, tuple[str, str]] = {}  # 3D name -> (folded name, its N,T shape tensor)
    plain: set[str] = {i.name for i in g.input} | set(inits)  # names available in 5D layout
    out_nodes = []
    counter = iter(range(10**9))

    def fold(name: str) -> tuple[str, str]:
        if name not in folded:
            k = next(counter)
            shape, nt, c, hw = f"__fold_shape{k}", f"__fold_nt{k}", f"__fold_c{k}", f"__fold_hw{k}"
            t, tgt, out = f"__fold_t{k}", f"__fold_tgt{k}", f"{name}__2d"
            out_nodes.extend([
                helper.make_node("Shape", [name], [shape]),
                helper.make_node("Gather", [shape, "__fold_nt_idx"], [nt], axis=0),
                helper.make_node("Gather", [shape, "__fold_c_idx"], [c], axis=0),
                helper.make_node("Gather", [shape, "__fold_hw_idx"], [hw], axis=0),
                helper.make_node("Transpose", [name], [t], perm=[0, 2, 1, 3, 4]),
                helper.make_node("Concat", ["__fold_neg1", c, hw], [tgt], axis=0),
                helper.make_node("Reshape", [t, tgt], [out]),
            ])
            folded[name] = (out, nt)
        return folded[name]

    def unfold(name: str) -> str:
        if name not in plain:
            f, nt = folded[name]
            k = next(counter)
            shape, rest, tgt, t = f"__unfold_shape{k}", f"__unfold_rest{k}", f"__unfold_tgt{k}", f"__unfold_t{k}"
            out_nodes.extend([
                helper.make_node("Shape", [f], [shape]),
                helper.make_node("Slice", [shape, "__fold_c_idx", "__fold_end4"], [rest]),
                helper.make_node("Concat", [nt, rest], [tgt], axis=0),
                helper.make_node("Reshape", [f, tgt], [t]),
                helper.make_node("Transpose", [t], [name], perm=[0, 2, 1, 3, 4]),
            ])
            plain.add(name)
        return name

    squeezed: set[str] = set()
    for n in list(g.node):
        if not foldable(n):
            n.input[:] = [unfold(i) if i and i not in plain else i for i in n.input]
            if _temporal_only(n, inits, uses):
                _temporal_to_2d(n, inits, out_nodes, next(counter))
            else:
                out_nodes.append(n)
            plain.update(n.output)
            continue
        acts = [i for i in n.input if i and i not in inits]
        pairs = [fold(i) for i in acts]
        mapping = {i: p[0] for i, p in zip(acts, pairs)}
        nt = pairs[0][1]
        if n.op_type in FOLDABLE_SPATIAL:
            _to_2d(n, inits, squeezed)
        n.input[:] = [mapping.get(i, i) for i in n.input]
        for o in n.output:
            folded[o] = (f"{o}__2d", nt)
        n.output[:] = [f"{o}__2d" for o in n.output]
        out_nodes.append(n)
    for o in g.output:
        unfold(o.name)
    g.ClearField("node")
    g.node.extend(out_nodes)
    del g.value_info[:]
    return model


def _temporal_only(node, inits: dict, uses: dict) -> bool:
    """A Conv with kernel (kt, 1, 1), unit strides and dilations, and no spatial padding."""
    if node.op_type != "Conv" or not node.input[1] in inits:
        return False
    w = inits[node.input[1]]
    a = _attrs(node)
    if len(w.dims) != 5 or list(w.dims[3:]) != [1, 1] or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return False
    pads = list(a.get("pads", [0] * 6))
    ok = all(v == 1 for v in list(a.get("strides", [1] * 3)) + list(a.get("dilations", [1] * 3)))
    return ok and pads[1:3] == [0, 0] and pads[4:6] == [0, 0] and len(uses[node.input[1]]) == 1


def _temporal_to_2d(node, inits: dict, out_nodes: list, k: int) -> None:
    """(kt,1,1) Conv on (N,C,T,H,W) = (kt,1) Conv2D on the free reshape (N,C,T,H*W)."""
    from onnx import helper, numpy_helper

    x, y = node.input[0], node.output[0]
    shape, nct, hw, tgt, x4, y4 = (f"__tconv_{s}{k}" for s in ("shape", "nct", "hw", "tgt", "x4", "y4"))
    yshape, ynct, ytgt = f"__tconv_yshape{k}", f"__tconv_ynct{k}", f"__tconv_ytgt{k}"
    w = inits[node.input[1]]
    w.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(w)[:, :, :, :, 0]), w.name))
    p = list(_attrs(node).get("pads", [0] * 6))
    group = _attrs(node).get("group", 1)
    conv = helper.make_node("Conv", [x4, *node.input[1:]], [y4], kernel_shape=[w.dims[2], 1],
                            pads=[p[0], 0, p[3], 0], group=group)
    out_nodes.extend([
        helper.make_node("Shape", [x], [shape]),
        helper.make_node("Slice", [shape, "__fold_zero", "__fold_three"], [nct]),
        helper.make_node("Slice", [shape, "__fold_three", "__fold_end5"], [hw]),
        helper.make_node("Concat", [nct, "__fold_neg1"], [tgt], axis=0),
        helper.make_node("Reshape", [x, tgt], [x4]),
        conv,
        helper.make_node("Shape", [y4], [yshape]),
        helper.make_node("Slice", [yshape, "__fold_zero", "__fold_three"], [ynct]),
        helper.make_node("Concat", [ynct, hw], [ytgt], axis=0),
        helper.make_node("Reshape", [y4, ytgt], [y]),
    ])


def _to_2d(node, inits: dict, squeezed: set[str]) -> None:
    """Drop the (unit) temporal entry of a Conv/pool's attributes and of its weight."""
    from onnx import numpy_helper

    for attr in node.attribute:
        if attr.name in ("kernel_shape", "strides", "dilations"):
            vals = list(attr.ints)[1:]
            attr.ClearField("ints")
            attr.ints.extend(vals)
        elif attr.name == "pads":
            p = list(attr.ints)
            attr.ClearField("ints")
            attr.ints.extend([p[1], p[2], p[4], p[5]])
    if node.op_type == "Conv" and node.input[1] not in squeezed:
        w = inits[node.input[1]]
        w.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(w)[:, :, 0]), w.name))
        squeezed.add(node.input[1])
