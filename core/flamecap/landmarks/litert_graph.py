"""Run a ``.tflite`` model that uses MediaPipe's three custom ops on LiteRT (``ai-edge-litert``).

LiteRT refuses ``face_landmark_with_attention.tflite``: it calls ``Landmarks2TransformMatrix``,
``TransformTensorBilinear`` and ``TransformLandmarks``, which only MediaPipe's own build registers. The
ops are small geometric steps between the network's convolution stacks, so the model is cut at them:
each stretch of builtin operators becomes its own small LiteRT model (same tensors, same weights, built
from the flatbuffer with the schema that ships in ``ai-edge-litert``), and the custom ops run here in
numpy between the stretches. The heavy work (every convolution) stays in LiteRT's XNNPACK kernels.

The custom ops, as MediaPipe defines them (version 2, options from the op's flexbuffer):

- ``Landmarks2TransformMatrix``: landmarks (1, K, 3) → a 4×4 matrix that maps an ``output_width`` ×
  ``output_height`` crop onto the input: rotation from two landmarks (``left/right_rotation_idx``) so their
  line becomes ``target_rotation_radians``, centre and size from the bounding box of ``subset_idxs`` in
  the rotated frame, scaled by ``scale_x/scale_y``.
- ``TransformTensorBilinear``: feature map (1, H, W, C) and that matrix → (1, oh, ow, C) by bilinear
  sampling at pixel centres; samples outside the map are 0.
- ``TransformLandmarks``: points (1, K, 2|3) in crop coordinates → input coordinates with the matrix (z kept).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import WeightsError

log = logging.getLogger(__name__)

CUSTOM_OPS = ("Landmarks2TransformMatrix", "TransformTensorBilinear", "TransformLandmarks")


# ---------------------------------------------------------------------------------------------------------
# the custom ops (pure, batched over a leading axis N)

def landmarks_to_transform_matrix(landmarks: np.ndarray, subset: np.ndarray, left: int, right: int,
                                  target_rotation: float, out_w: int, out_h: int, scale_x: float,
                                  scale_y: float) -> np.ndarray:
    """landmarks (N, K, ≥2) → (N, 4, 4) crop-to-input matrix (see module docstring).

    The crop is the bounding box of ``subset`` in a frame rotated so that left→right is horizontal,
    enlarged by ``scale``; crop pixel (u, v) maps to centre + R(−r) · diag(sx·w/out_w, sy·h/out_h) ·
    (u − out_w/2, v − out_h/2). Written with cos/sin arrays, not stacked 2×2 matrices: this runs three
    times per frame on a few dozen points, where numpy's per-call cost is what counts."""
    p = np.asarray(landmarks, np.float64)
    d = p[:, right, :2] - p[:, left, :2]
    r = target_rotation - np.arctan2(d[:, 1], d[:, 0])                  # (N,)
    c, s = np.cos(r)[:, None], np.sin(r)[:, None]
    x, y = p[:, subset, 0], p[:, subset, 1]
    qx, qy = c * x - s * y, s * x + c * y                               # subset in the rotated frame
    lo_x, hi_x, lo_y, hi_y = qx.min(1), qx.max(1), qy.min(1), qy.max(1)
    mx, my = (lo_x + hi_x) / 2, (lo_y + hi_y) / 2
    c, s = c[:, 0], s[:, 0]
    cx, cy = c * mx + s * my, -s * mx + c * my                          # back by R(−r) = [[c, s], [−s, c]]
    kx = scale_x * (hi_x - lo_x) / out_w
    ky = scale_y * (hi_y - lo_y) / out_h
    m = np.zeros((p.shape[0], 4, 4))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c * kx, s * ky, -s * kx, c * ky
    m[:, 0, 3] = cx - (m[:, 0, 0] * out_w + m[:, 0, 1] * out_h) / 2
    m[:, 1, 3] = cy - (m[:, 1, 0] * out_w + m[:, 1, 1] * out_h) / 2
    m[:, 2, 2] = m[:, 3, 3] = 1.0
    return m.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _pixel_centres(h: int, w: int) -> np.ndarray:
    """(h·w, 2) pixel-centre coordinates (u + 0.5, v + 0.5), row-major; read-only (cached)."""
    v, u = np.mgrid[0:h, 0:w]
    uv = np.stack([u.ravel() + 0.5, v.ravel() + 0.5], -1).astype(np.float64)
    uv.setflags(write=False)
    return uv


def transform_tensor_bilinear(features: np.ndarray, matrix: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """features (1, H, W, C) or (N, H, W, C), matrix (M, 4, 4) (N = 1 or M) → (M, out_h, out_w, C): bilinear
    samples at the matrix image of each output pixel centre (the +0.5 / −0.5 is MediaPipe's align-corners
    correction); a sample whose position falls outside [0, W−1] × [0, H−1] is 0, neighbours beyond the
    edge count as 0. Several matrices over one feature map (the lips and both eyes) go in one call."""
    f = np.asarray(features, np.float32)
    m = np.asarray(matrix, np.float64)
    M = m.shape[0]
    N, H, W, C = f.shape
    # one zero border around the map: every tap of an in-bounds sample is then a valid index
    pad = np.zeros((N, H + 2, W + 2, C), np.float32)
    pad[:, 1:-1, 1:-1] = f
    uv = _pixel_centres(out_h, out_w)                                    # (P, 2)
    xy = np.einsum("mij,pj->mpi", m[:, :2, :2], uv) + m[:, None, :2, 3] - 0.5   # (M, P, 2)
    x, y = xy[..., 0], xy[..., 1]
    inside = (x >= 0) & (x <= W - 1) & (y >= 0) & (y <= H - 1)
    x = np.where(inside, x, 0.0)
    y = np.where(inside, y, 0.0)
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    xi, yi = x0.astype(np.int64) + 1, y0.astype(np.int64) + 1
    n = np.arange(M)[:, None] if N == M else np.zeros((M, 1), np.int64)
    w00 = (1 - fx) * (1 - fy) * inside
    w01 = fx * (1 - fy) * inside
    w10 = (1 - fx) * fy * inside
    w11 = fx * fy * inside
    out = (pad[n, yi, xi] * w00[..., None] + pad[n, yi, xi + 1] * w01[..., None]
           + pad[n, yi + 1, xi] * w10[..., None] + pad[n, yi + 1, xi + 1] * w11[..., None])
    return out.reshape(M, out_h, out_w, C)


def transform_landmarks(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """points (N, K, 2|3), matrix (N, 4, 4) → the same shape, x, y mapped by the matrix (z unchanged)."""
    p = np.asarray(points, np.float32)
    m = np.asarray(matrix, np.float32)
    out = p.copy()
    out[..., :2] = np.einsum("nij,nkj->nki", m[:, :2, :2], p[..., :2]) + m[:, None, :2, 3]
    return out


# ---------------------------------------------------------------------------------------------------------
# cutting the flatbuffer at the custom ops

@dataclass
class _Custom:
    name: str
    inputs: list[int]
    outputs: list[int]
    options: dict


@dataclass
class _Stage:
    interpreter: object          # ai_edge_litert Interpreter
    inputs: list[int]            # tensor ids, in the stage model's input order
    outputs: list[int]
    in_detail: list[int]         # interpreter input indices, same order
    out_detail: list[int]


class SplitModel:
    """A ``.tflite`` model run as LiteRT stages with MediaPipe's custom ops in numpy between them.

    ``run(x)`` → dict ``{output name: array}`` for one input image tensor (1, H, W, C) float32. Models
    without custom ops run as one stage (then it is a plain LiteRT interpreter)."""

    def __init__(self, path: str | Path, num_threads: int = 2):
        from ai_edge_litert import schema_py_generated as S
        from ai_edge_litert.interpreter import Interpreter
        import flatbuffers
        from flatbuffers import flexbuffers
        path = Path(path)
        try:
            buf = path.read_bytes()
        except OSError as exc:
            raise WeightsError(f"cannot read model file {path} ({exc.strerror or exc}); run "
                               f"'flamecap models fetch-mediapipe'") from None
        model = S.ModelT.InitFromPackedBuf(buf, 0)
        g = model.subgraphs[0]
        codes = model.operatorCodes
        custom_code = {i: c.customCode.decode() for i, c in enumerate(codes) if c.customCode}
        unknown = set(custom_code.values()) - set(CUSTOM_OPS)
        if unknown:
            raise WeightsError(f"{path.name} uses custom ops {sorted(unknown)} that FlameCap does not implement; "
                               f"use the files from 'flamecap models fetch-mediapipe'")
        ops = list(g.operators)
        const = {t for t, tensor in enumerate(g.tensors)
                 if tensor.buffer and model.buffers[tensor.buffer].data is not None
                 and len(model.buffers[tensor.buffer].data)}
        producer = {int(t): k for k, o in enumerate(ops) for t in o.outputs}
        is_custom = [o.opcodeIndex in custom_code for o in ops]
        # level = how many custom ops lie on the way from the graph input (operators are topologically
        # ordered in a .tflite file, so one forward pass settles it)
        level = [0] * len(ops)
        for k, o in enumerate(ops):
            lv = 0
            for t in o.inputs:
                p = producer.get(int(t))
                if p is not None:
                    lv = max(lv, level[p] + int(is_custom[p]))
            level[k] = lv
        # operators fed by constants only (the float16 → float32 DEQUANTIZE of weights) belong with their
        # first consumer, else the weights would cross stage boundaries as runtime inputs
        consumers: dict[int, list[int]] = {}
        for k, o in enumerate(ops):
            for t in o.inputs:
                consumers.setdefault(int(t), []).append(k)
        for k in range(len(ops) - 1, -1, -1):
            o = ops[k]
            if not is_custom[k] and all(int(t) in const or int(t) < 0 for t in o.inputs):
                users = [c for t in o.outputs for c in consumers.get(int(t), [])]
                if users:
                    level[k] = min(level[c] for c in users)
        graph_out = [int(t) for t in g.outputs]
        self.output_names = {int(t): g.tensors[t].name.decode() for t in g.outputs}
        self.input_id = int(g.inputs[0])
        self.input_shape = tuple(int(s) for s in g.tensors[self.input_id].shape)
        n_levels = max(level) + 1
        self.plan: list[tuple[str, object]] = []
        for lv in range(n_levels):
            members = [k for k in range(len(ops)) if level[k] == lv and not is_custom[k]]
            if members:
                self.plan.append(("stage", self._stage(S, flatbuffers, Interpreter, model, members, producer,
                                                       consumers, level, is_custom, const, graph_out,
                                                       num_threads)))
            for k in range(len(ops)):
                if level[k] == lv and is_custom[k]:
                    o = ops[k]
                    opts = flexbuffers.Loads(bytes(o.customOptions)) if o.customOptions is not None else {}
                    self.plan.append(("custom", _Custom(custom_code[o.opcodeIndex], [int(t) for t in o.inputs],
                                                        [int(t) for t in o.outputs], dict(opts or {}))))
        self.plan = self._group_bilinear(self.plan)
        self._shapes = {t: tuple(int(s) for s in g.tensors[t].shape) for t in range(len(g.tensors))}
        log.debug("%s: %d LiteRT stages, %d custom ops", path.name, sum(p[0] == "stage" for p in self.plan),
                  sum(p[0] == "custom" for p in self.plan))

    @staticmethod
    def _stage(S, flatbuffers, Interpreter, model, members, producer, consumers, level, is_custom, const,
               graph_out, num_threads) -> _Stage:
        g = model.subgraphs[0]
        mset = set(members)
        produced = {int(t) for k in members for t in g.operators[k].outputs}
        ins, outs = [], []
        for k in members:
            for t in g.operators[k].inputs:
                t = int(t)
                if t >= 0 and t not in produced and t not in const and t not in ins:
                    ins.append(t)
        for t in sorted(produced):
            later = [c for c in consumers.get(t, []) if c not in mset]
            if later or t in graph_out:
                outs.append(t)
        sub = S.SubGraphT()
        sub.tensors = g.tensors          # the same tensor table: ids stay valid across stages
        sub.operators = [g.operators[k] for k in members]
        sub.inputs, sub.outputs = ins, outs
        sub.name = g.name
        part = S.ModelT()
        part.version, part.description = model.version, model.description
        part.operatorCodes = model.operatorCodes
        part.subgraphs = [sub]
        used = {g.tensors[t].buffer for k in members for t in g.operators[k].inputs if int(t) >= 0}
        # buffers other stages need are left empty here (one copy of each weight in memory per stage)
        part.buffers = [b if i in used or i == 0 else S.BufferT() for i, b in enumerate(model.buffers)]
        b = flatbuffers.Builder(1 << 22)
        b.Finish(part.Pack(b), file_identifier=b"TFL3")
        interp = Interpreter(model_content=bytes(b.Output()), num_threads=num_threads)
        interp.allocate_tensors()
        det_in = {d["name"]: d["index"] for d in interp.get_input_details()}
        det_out = {d["name"]: d["index"] for d in interp.get_output_details()}
        name = {t: g.tensors[t].name.decode() for t in ins + outs}
        return _Stage(interp, ins, outs, [det_in[name[t]] for t in ins], [det_out[name[t]] for t in outs])

    @staticmethod
    def _group_bilinear(plan: list) -> list:
        """Consecutive TransformTensorBilinear ops that sample the same feature map with the same output
        size become one ``("bilinear", [ops])`` step."""
        out: list = []
        for kind, item in plan:
            if kind == "custom" and item.name == "TransformTensorBilinear":
                prev = out[-1] if out else None
                if (prev is not None and prev[0] == "bilinear" and prev[1][0].inputs[0] == item.inputs[0]
                        and prev[1][0].options == item.options):
                    prev[1].append(item)
                    continue
                out.append(("bilinear", [item]))
            else:
                out.append((kind, item))
        return out

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        values: dict[int, np.ndarray] = {self.input_id: np.ascontiguousarray(x, np.float32)}
        for kind, item in self.plan:
            if kind == "stage":
                st = item
                for t, i in zip(st.inputs, st.in_detail):
                    st.interpreter.set_tensor(i, values[t].reshape(self._shapes[t]))
                st.interpreter.invoke()
                for t, i in zip(st.outputs, st.out_detail):
                    values[t] = st.interpreter.get_tensor(i)
            elif kind == "bilinear":
                # the crops of one feature map (lips, both eyes) in one batched call
                ops = item
                o = ops[0].options
                crops = transform_tensor_bilinear(values[ops[0].inputs[0]],
                                                  np.concatenate([values[op.inputs[1]] for op in ops]),
                                                  int(o["output_height"]), int(o["output_width"]))
                for k, op in enumerate(ops):
                    values[op.outputs[0]] = crops[k:k + 1]
            else:
                values[item.outputs[0]] = self._custom(item, values)
        return {name: values[t] for t, name in self.output_names.items()}

    def _custom(self, op: _Custom, values: dict[int, np.ndarray]) -> np.ndarray:
        o = op.options
        if op.name == "Landmarks2TransformMatrix":
            return landmarks_to_transform_matrix(
                values[op.inputs[0]], np.asarray(o["subset_idxs"], np.int64), int(o["left_rotation_idx"]),
                int(o["right_rotation_idx"]), float(o.get("target_rotation_radians", 0.0)),
                int(o["output_width"]), int(o["output_height"]), float(o["scale_x"]), float(o["scale_y"]))
        if op.name == "TransformTensorBilinear":
            return transform_tensor_bilinear(values[op.inputs[0]], values[op.inputs[1]],
                                             int(o["output_height"]), int(o["output_width"]))
        return transform_landmarks(values[op.inputs[0]], values[op.inputs[1]])

    def custom_options(self, name: str) -> list[dict]:
        """The options of every custom op called ``name``, in graph order (e.g. the refinement subsets)."""
        ops = [item for kind, item in self.plan if kind == "custom"]
        ops += [op for kind, item in self.plan if kind == "bilinear" for op in item]
        return [op.options for op in ops if op.name == name]
