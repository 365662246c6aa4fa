"""Differentiable FLAME layer (torch). Skinning is smplx's ``lbs``; this module only wires FLAME's
parameters to it and adds eyelids, per-vertex offsets and barycentric landmarks."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from smplx.lbs import lbs

from ..contract.model_format import FlameModelData


@dataclass
class FlameParams:
    """Batched FLAME parameters (B frames). Any field left ``None`` is zero.

    shape (B, S) or (S,), expr (B, E), global_rot / neck_pose / jaw_pose (B, 3) axis-angle radians,
    eye_pose (B, 6) left then right, transl (B, 3) metres, eyelids (B, 2), offsets (V, 3) or (B, V, 3) m."""

    shape: torch.Tensor | None = None
    expr: torch.Tensor | None = None
    global_rot: torch.Tensor | None = None
    neck_pose: torch.Tensor | None = None
    jaw_pose: torch.Tensor | None = None
    eye_pose: torch.Tensor | None = None
    transl: torch.Tensor | None = None
    eyelids: torch.Tensor | None = None
    offsets: torch.Tensor | None = None


@dataclass
class FlameOutput:
    vertices: torch.Tensor  # (B, V, 3) metres, FLAME world
    joints: torch.Tensor    # (B, 5, 3) posed joints: root, neck, jaw, eye_l, eye_r


class FlameLayer(torch.nn.Module):
    """FLAME as a torch module: ``layer(FlameParams) -> FlameOutput``. Works in float32/float64, CPU/CUDA.

    ``n_shape`` / ``n_expr`` truncate the model's bases (fewer components = faster fits)."""

    def __init__(self, model: FlameModelData, n_shape: int | None = None, n_expr: int | None = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        a = model.arrays
        self.n_shape = min(n_shape or model.n_shape, model.n_shape)
        self.n_expr = min(n_expr or model.n_expr, model.n_expr)
        t = lambda x: torch.as_tensor(np.asarray(x), dtype=dtype)  # noqa: E731
        self.register_buffer("v_template", t(a["v_template"]))
        self.register_buffer("shapedirs", t(a["shapedirs"][:, :, : self.n_shape]))
        self.register_buffer("exprdirs", t(a["exprdirs"][:, :, : self.n_expr]))
        n_pose = a["posedirs"].shape[2]
        self.register_buffer("posedirs", t(a["posedirs"].reshape(-1, n_pose).T.copy()))  # (P, V*3) for lbs
        self.register_buffer("J_regressor", t(a["J_regressor"]))
        self.register_buffer("lbs_weights", t(a["weights"]))
        self.register_buffer("parents", torch.as_tensor(np.asarray(a["parents"]), dtype=torch.long))
        self.register_buffer("faces", torch.as_tensor(np.asarray(a["faces"]), dtype=torch.long))
        self.has_eyelids = "eyelid_dirs" in a
        if self.has_eyelids:
            self.register_buffer("eyelid_dirs", t(a["eyelid_dirs"]))

    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def _batch(self, p: FlameParams) -> int:
        for x in (p.expr, p.global_rot, p.neck_pose, p.jaw_pose, p.eye_pose, p.transl, p.eyelids):
            if x is not None:
                return int(x.shape[0])
        if p.shape is not None and p.shape.dim() == 2:
            return int(p.shape.shape[0])
        if p.offsets is not None and p.offsets.dim() == 3:
            return int(p.offsets.shape[0])
        return 1

    def _get(self, x: torch.Tensor | None, batch: int, dim: int) -> torch.Tensor:
        if x is None:
            return self.v_template.new_zeros(batch, dim)
        x = x.to(self.v_template.dtype)
        return x.expand(batch, dim) if x.dim() == 2 and x.shape[0] == 1 else x.reshape(batch, dim)

    @staticmethod
    def _fit_coeffs(x: torch.Tensor, n: int) -> torch.Tensor:
        """Coefficients (..., k) → (..., n): extra components dropped, missing ones zero (e.g. a 100-d
        shape vector on a 300-component layer)."""
        k = x.shape[-1]
        if k >= n:
            return x[..., :n]
        return torch.nn.functional.pad(x, (0, n - k))

    def neutral(self, shape: torch.Tensor | None = None, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """Identity mesh in the zero pose and expression: template + shapedirs·shape (+ offsets), (V, 3)."""
        v = self.v_template
        if shape is not None:
            v = v + torch.einsum("vck,k->vc", self.shapedirs,
                                 self._fit_coeffs(shape.reshape(-1).to(v.dtype), self.n_shape))
        if offsets is not None:
            v = v + offsets.to(v.dtype)
        return v

    def forward(self, p: FlameParams) -> FlameOutput:
        B = self._batch(p)
        shape = p.shape if p.shape is not None else self.v_template.new_zeros(self.n_shape)
        if shape.dim() == 1:
            shape = shape.unsqueeze(0)
        shape = self._fit_coeffs(shape.to(self.v_template.dtype), self.n_shape).expand(B, -1)
        expr = self._get(None if p.expr is None else self._fit_coeffs(p.expr, self.n_expr), B, self.n_expr)
        betas = torch.cat([shape, expr], dim=1)
        dirs = torch.cat([self.shapedirs, self.exprdirs], dim=2)
        template = self.v_template.unsqueeze(0).expand(B, -1, -1)
        if p.offsets is not None:
            template = template + p.offsets.to(template.dtype)
        if self.has_eyelids and p.eyelids is not None:
            template = template + torch.einsum("vck,bk->bvc", self.eyelid_dirs, self._get(p.eyelids, B, 2))
        pose = torch.cat([self._get(p.global_rot, B, 3), self._get(p.neck_pose, B, 3),
                          self._get(p.jaw_pose, B, 3), self._get(p.eye_pose, B, 6)], dim=1)
        verts, joints = lbs(betas, pose, template, dirs, self.posedirs, self.J_regressor, self.parents,
                            self.lbs_weights, pose2rot=True)
        if p.transl is not None:
            tr = self._get(p.transl, B, 3).unsqueeze(1)
            verts = verts + tr
            joints = joints + tr
        return FlameOutput(vertices=verts, joints=joints)


def barycentric_points(vertices: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor,
                       bary: torch.Tensor) -> torch.Tensor:
    """Surface points from a barycentric binding: vertices (B, V, 3), faces (F, 3), face_idx (K,),
    bary (K, 3) → (B, K, 3)."""
    tri = faces[face_idx.long()]                       # (K, 3)
    corners = vertices[:, tri]                         # (B, K, 3, 3)
    return (corners * bary.to(vertices.dtype)[None, :, :, None]).sum(dim=2)
