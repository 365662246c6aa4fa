"""FLAME restricted to the bound surface points, with analytic/forward-mode Jacobians (torch).

Only the points a :class:`~flamecap.binding.SurfaceBinding` binds matter to the fitter, so the model
is evaluated on R points instead of all V vertices: each bound point carries the barycentric blend of its
triangle's bases (template, shape, expression, pose correctives, eyelids — all exact, they are linear) and
of its corners' skinning weights. Blending the weights is the one approximation: skinning a blended point
differs from blending skinned corners by Σ_k b_k (w_k − w̄)·(R_j − R_i)(v_k − v̄), i.e. weight difference ×
relative joint rotation × triangle size — below 0.1 mm on FLAME's jaw seam at 20° jaw opening (tested).
Joints are exact (regressed from the full blended mesh, like FLAME/smplx).

Camera: fixed extrinsics ``DEFAULT_CAM_R = diag(1, -1, -1)``, ``cam_t = 0``; pinhole with focal ``f`` px and
principal point ``(cx, cy)`` px. Pose layout ``rot15`` = root (global_rot), neck, jaw, eye_l, eye_r axis-angles.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.func import jvp, vmap

from ..contract.model_format import FlameModelData
from ..errors import FitError

N_JOINTS = 5


def rodrigues(r: torch.Tensor) -> torch.Tensor:
    """Axis-angle ``(..., 3)`` rad → rotation matrices ``(..., 3, 3)`` (smplx's formula, vmap/jvp safe)."""
    angle = torch.linalg.norm(r + 1e-8, dim=-1, keepdim=True)
    axis = r / angle
    s = torch.sin(angle)[..., None]
    c = torch.cos(angle)[..., None]
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(r.shape[:-1] + (3, 3))
    eye = torch.eye(3, dtype=r.dtype, device=r.device)
    return eye + s * k + (1.0 - c) * (k @ k)


@dataclass
class PosedPoints:
    """points (T, R, 3) metres world; M (T, R, 3, 4) blended skinning transforms; xu (T, R, 3) posed
    points without translation. (U = R: one model point per bound point.)"""

    points: torch.Tensor
    M: torch.Tensor
    xu: torch.Tensor


class BoundModel:
    """FLAME evaluated on R bound points . Buffers in ``dtype`` on ``device``.

    model: FlameModelData; face_idx (R,), bary (R, 3): the binding rows used; n_shape / n_expr: leading
    components kept."""

    def __init__(self, model: FlameModelData, face_idx: np.ndarray, bary: np.ndarray, n_shape: int,
                 n_expr: int, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        a = model.arrays
        faces = np.asarray(a["faces"], dtype=np.int64)
        face_idx = np.asarray(face_idx, dtype=np.int64)
        bary = np.asarray(bary, dtype=np.float64)
        if face_idx.ndim != 1 or bary.shape != (face_idx.shape[0], 3):
            raise FitError(f"binding has face_idx {face_idx.shape} and bary {bary.shape}; expected (R,) and (R, 3)")
        if face_idx.size == 0:
            raise FitError("the landmark binding binds no points to the head model; check the aligner/model pair")
        if face_idx.min() < 0 or face_idx.max() >= faces.shape[0]:
            raise FitError(f"binding face index outside 0..{faces.shape[0] - 1}; the binding was made for "
                           f"another mesh topology")
        self.n_shape = int(min(n_shape, model.n_shape))
        self.n_expr = int(min(n_expr, model.n_expr))
        W = np.asarray(a["weights"], dtype=np.float64)
        tri = faces[face_idx]                                       # (R, 3)

        def blend(arr: np.ndarray) -> np.ndarray:
            arr = np.asarray(arr, dtype=np.float64)
            return np.einsum("rk,rk...->r...", bary, arr[tri])

        t = lambda x: torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=device)  # noqa: E731
        self.dtype, self.device = dtype, torch.device(device)
        self.R = self.U = int(face_idx.shape[0])
        self.tmpl = t(blend(a["v_template"]))                                    # (U, 3)
        self.shapedirs = t(blend(np.asarray(a["shapedirs"])[:, :, : self.n_shape]))  # (U, 3, S)
        self.exprdirs = t(blend(np.asarray(a["exprdirs"])[:, :, : self.n_expr]))     # (U, 3, E)
        pd = blend(a["posedirs"])                                                 # (U, 3, P)
        self.posedirs = t(pd.reshape(self.U * 3, -1).T)                           # (P, U*3)
        self.has_eyelids = "eyelid_dirs" in a
        self.eyelid_dirs = t(blend(a["eyelid_dirs"])) if self.has_eyelids else None  # (U, 3, 2)
        self.weights = t(blend(W))                                                # (U, J)
        Jreg = np.asarray(a["J_regressor"], dtype=np.float64)
        self.J_tmpl = t(Jreg @ np.asarray(a["v_template"], dtype=np.float64))     # (J, 3)
        self.J_dirs = t(np.einsum("jv,vck->jck", Jreg, np.asarray(a["shapedirs"], dtype=np.float64)[:, :, : self.n_shape]))
        self.J_edirs = t(np.einsum("jv,vck->jck", Jreg, np.asarray(a["exprdirs"], dtype=np.float64)[:, :, : self.n_expr]))
        self.J_ldirs = (t(np.einsum("jv,vck->jck", Jreg, np.asarray(a["eyelid_dirs"], dtype=np.float64)))
                        if self.has_eyelids else None)
        self.parents = [int(p) for p in np.asarray(a["parents"])]

    def subset(self, rows: np.ndarray) -> "BoundModel":
        """The same model on a subset of its bound points (rows (R',) indices): per-point buffers sliced,
        joint buffers shared."""
        rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        out = BoundModel.__new__(BoundModel)
        out.__dict__.update({k: v for k, v in self.__dict__.items() if not k.startswith("_")})
        out.R = out.U = int(rows.numel())
        for name in ("tmpl", "shapedirs", "exprdirs", "eyelid_dirs", "weights"):
            if getattr(self, name) is not None:
                setattr(out, name, getattr(self, name)[rows].contiguous())
        P = self.posedirs.shape[0]
        out.posedirs = self.posedirs.reshape(P, self.U, 3)[:, rows].reshape(P, -1).contiguous()
        return out

    # ---- pieces -------------------------------------------------------------------------------------
    def shaped(self, shape: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """shape (S,) → rest points (U, 3) and rest joints (J, 3) of the identity."""
        return (self.tmpl + torch.einsum("uck,k->uc", self.shapedirs, shape),
                self.J_tmpl + torch.einsum("jck,k->jc", self.J_dirs, shape))

    def unposed(self, v_shaped: torch.Tensor, J_shaped: torch.Tensor, expr: torch.Tensor,
                eyelids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Add expression (T, E) [+ eyelids (T, 2)] → rest vertices (T, U, 3) and joints (T, J, 3) (like
        smplx, FLAME regresses its joints from the blended rest mesh)."""
        v = v_shaped + torch.einsum("uck,tk->tuc", self.exprdirs, expr)
        J = J_shaped + torch.einsum("jck,tk->tjc", self.J_edirs, expr)
        if eyelids is not None and self.has_eyelids:
            v = v + torch.einsum("uck,tk->tuc", self.eyelid_dirs, eyelids)
            J = J + torch.einsum("jck,tk->tjc", self.J_ldirs, eyelids)
        return v, J

    def pose(self, rot15: torch.Tensor, v: torch.Tensor, joints: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Skin: rot15 (T, 15), v (T, U, 3) rest, joints (T, J, 3) rest → posed xu (T, U, 3) (no
        translation), blended transforms M (T, U, 3, 4) and global joint rotations Rg (T, J, 3, 3)."""
        T = rot15.shape[0]
        R = rodrigues(rot15.reshape(T, N_JOINTS, 3))                          # (T, J, 3, 3)
        eye = torch.eye(3, dtype=R.dtype, device=R.device)
        feat = (R[:, 1:] - eye).reshape(T, -1)                                 # (T, 36)
        v = v + (feat @ self.posedirs).reshape(T, self.U, 3)
        G = []  # global rotation / posed joint position per joint
        for j in range(N_JOINTS):
            p = self.parents[j]
            if p < 0:
                G.append((R[:, j], joints[:, j]))
            else:
                Rp, tp = G[p]
                G.append((Rp @ R[:, j], tp + (Rp @ (joints[:, j] - joints[:, p]).unsqueeze(-1)).squeeze(-1)))
        Rg = torch.stack([g[0] for g in G], dim=1)                             # (T, J, 3, 3)
        tg = torch.stack([g[1] for g in G], dim=1)                             # (T, J, 3)
        a = tg - (Rg @ joints.unsqueeze(-1)).squeeze(-1)                       # rest-pose joint removed
        A = torch.cat([Rg, a.unsqueeze(-1)], dim=-1).reshape(T, N_JOINTS, 12)
        self._A = A.reshape(T, N_JOINTS, 3, 4)
        M = (self.weights @ A).reshape(T, self.U, 3, 4)                        # (T, U, 3, 4)
        xu = (M[..., :3] * v.unsqueeze(-2)).sum(-1) + M[..., 3]
        self._last = (R, Rg, tg, a, v)  # for rot_jacobian (same call)
        return xu, M, Rg

    def rot_jacobian(self, rot15: torch.Tensor, M3: torch.Tensor, cols: list[tuple[int, int]]) -> torch.Tensor:
        """Analytic d(posed points)/d(axis-angle components), right after :meth:`pose` on the same inputs.

        A change δ of joint i's axis-angle rotates every descendant transform about the posed joint i by
        φ = Rg_i·J_r(θ_i)·δ (J_r: SO(3) right Jacobian), so dx = φ × Σ_{j ⊒ i} w_j (y_j − P_i) with y_j the
        point moved by joint j alone; the pose correctives of joint i add M3·posedirs_i·d vec(R_i).
        cols: (joint, component) per output column → (T, U, 3, len(cols))."""
        R, Rg, P, a, v = self._last
        T = rot15.shape[0]
        th = rot15.reshape(T, N_JOINTS, 3)
        Jr = right_jacobian(th)                                                # (T, J, 3, 3)
        y = (Rg[:, None] * v[:, :, None, None, :]).sum(-1) + a[:, None]        # (T, U, J, 3)
        desc = self._descendants()
        pd = self.posedirs.reshape(4, 9, self.U * 3)
        by_joint: dict[int, list[int]] = {}
        for (i, k) in cols:
            by_joint.setdefault(i, []).append(k)
        res: dict[tuple[int, int], torch.Tensor] = {}
        for i, ks in by_joint.items():
            wsel = self.weights[:, desc[i]]                                    # (U, nd)
            Sv = (wsel[None, :, :, None] * (y[:, :, desc[i]] - P[:, None, None, i])).sum(2)  # (T, U, 3)
            G = (Rg[:, i] @ Jr[:, i])[:, :, ks]                                # (T, 3, nk): φ = G δ
            # φ × S = −[S]× φ
            d = -torch.einsum("tuab,tbk->tuak", skew(Sv), G)                   # (T, U, 3, nk)
            if i >= 1:
                dR = R[:, i, None] @ skew(Jr[:, i, :, ks].transpose(1, 2))    # (T, nk, 3, 3)
                dpc = (dR.reshape(T, len(ks), 9) @ pd[i - 1]).reshape(T, len(ks), self.U, 3)
                d = d + torch.einsum("tuab,tkub->tuak", M3, dpc)
            for n, k in enumerate(ks):
                res[(i, k)] = d[..., n]
        out = [res[c] for c in cols]
        return torch.stack(out, -1)

    def _descendants(self) -> list[list[int]]:
        desc = [[j] for j in range(N_JOINTS)]
        for j in range(N_JOINTS - 1, 0, -1):
            p = self.parents[j]
            desc[p] = sorted(set(desc[p]) | set(desc[j]))
        return desc

    def joint_operator(self, Rg: torch.Tensor) -> torch.Tensor:
        """d(transform translations)/d(rest joints): C (T, J, J, 3, 3) with a_j = Σ_k C_jk J_k, where a_j is
        the translation of joint j's skinning transform (it is linear in the rest joints)."""
        T = Rg.shape[0]
        eye = torch.eye(3, dtype=Rg.dtype, device=Rg.device).expand(T, 3, 3)
        zero = torch.zeros_like(eye)
        Q: list[list[torch.Tensor]] = []
        for j in range(N_JOINTS):
            p = self.parents[j]
            if p < 0:
                Q.append([eye if k == j else zero for k in range(N_JOINTS)])
            else:
                Q.append([Q[p][k] + (Rg[:, p] if k == j else 0) - (Rg[:, p] if k == p else 0)
                          for k in range(N_JOINTS)])
        C = torch.stack([torch.stack(row, 1) for row in Q], 1)                 # (T, J, J, 3, 3)
        idx = torch.arange(N_JOINTS)
        C[:, idx, idx] = C[:, idx, idx] - Rg
        return C

    def points(self, shape: torch.Tensor, expr: torch.Tensor, rot15: torch.Tensor, transl: torch.Tensor,
               eyelids: torch.Tensor | None = None) -> torch.Tensor:
        """World points (T, R, 3) metres."""
        vs, Js = self.shaped(shape)
        v, J = self.unposed(vs, Js, expr, eyelids)
        xu = self.pose(rot15, v, J)[0]
        return xu + transl[:, None, :]

    # ---- Jacobians ------------------------------------------------------------------------------------
    def jacobians(self, shape: torch.Tensor, expr: torch.Tensor, rot15: torch.Tensor, transl: torch.Tensor,
                  eyelids: torch.Tensor | None, rot_dirs: torch.Tensor, want_shape: bool = False,
                  analytic: bool = True) -> dict:
        """Points and their Jacobians at the given parameters.

        rot_dirs (Nr, 15): the active rotation directions. Returns dict with ``points`` (T, R, 3) and
        ``d_rot`` (T, R, 3, Nr) (rot_dirs rows are one-hot over rot15; analytic, or forward-mode AD
        with ``analytic=False``), ``d_expr`` (T, R, 3, E), ``d_eyelids`` (T, R, 3, 2) or None, ``d_shape``
        (T, R, 3, S) when ``want_shape``. (Translation's Jacobian is the identity.)"""
        T = rot15.shape[0]
        vs, Js = self.shaped(shape)
        v, J = self.unposed(vs, Js, expr, eyelids)
        xu, M, Rg = self.pose(rot15, v, J)
        M3 = M[..., :3]
        out = {"points": xu + transl[:, None, :]}
        dirs = rot_dirs.to(rot15.dtype)

        if analytic:
            cols = [(int(j) // 3, int(j) % 3) for j in torch.argmax(dirs, dim=1)]
            out["d_rot"] = self.rot_jacobian(rot15, M3, cols)
        else:
            def f1(r):
                return self.pose(r, v, J)[0]

            d = vmap(lambda tr: jvp(f1, (rot15,), (tr.expand(T, 15),))[1])(dirs)  # (Nr, T, U, 3)
            out["d_rot"] = d.permute(1, 2, 3, 0)
        C = self.joint_operator(Rg)                                            # (T, J, J, 3, 3)

        def lin(dirs_u: torch.Tensor, dirs_j: torch.Tensor) -> torch.Tensor:
            # d x_u = M3 · dirs_u + Σ_j w_uj Σ_k C_jk dirs_j[k]
            k = dirs_u.shape[-1]
            cj = torch.einsum("tjkab,kbn->tjan", C, dirs_j).reshape(T, N_JOINTS, 3 * k)
            du = torch.einsum("tuab,ubk->tuak", M3, dirs_u) + (self.weights @ cj).reshape(T, self.U, 3, k)
            return du

        out["d_expr"] = lin(self.exprdirs, self.J_edirs)
        out["d_eyelids"] = (lin(self.eyelid_dirs, self.J_ldirs)
                            if (eyelids is not None and self.has_eyelids) else None)
        if want_shape:
            out["d_shape"] = lin(self.shapedirs, self.J_dirs)
        return out


    def _linear_basis(self, n_expr: int, lids: bool, shape: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenated [expr[:n_expr] | eyelids? | shape?] bases at the points (U, 3, K) and at the joints
        (J·3, K), cached per combination."""
        key = (n_expr, lids, shape)
        cache = self.__dict__.setdefault("_basis_cache", {})
        if key not in cache:
            bu = [self.exprdirs[..., :n_expr]]
            bj = [self.J_edirs[..., :n_expr]]
            if lids:
                bu.append(self.eyelid_dirs)
                bj.append(self.J_ldirs)
            if shape:
                bu.append(self.shapedirs)
                bj.append(self.J_dirs)
            cache[key] = (torch.cat(bu, -1).contiguous(), torch.cat(bj, -1).reshape(N_JOINTS * 3, -1).contiguous())
        return cache[key]

    # ---- fused projected linearisation (the fitter's hot path) -------------------------------------------
    def forward(self, shape: torch.Tensor, expr: torch.Tensor, rot15: torch.Tensor, transl: torch.Tensor,
                eyelids: torch.Tensor | None = None) -> "Forward":
        """Posed world points and the intermediates the projected Jacobians need (see :class:`Forward`)."""
        vs, Js = self.shaped(shape)
        v, J = self.unposed(vs, Js, expr, eyelids)
        xu, M, Rg = self.pose(rot15, v, J)
        R, _, tg, _, vpc = self._last
        return Forward(points=xu + transl[:, None, :], xu=xu, M=M, R=R, Rg=Rg, tg=tg, A=self._A, v=vpc)

    def linearize_projected(self, shape: torch.Tensor, expr: torch.Tensor, rot15: torch.Tensor,
                            transl: torch.Tensor, eyelids: torch.Tensor | None, focal: torch.Tensor, cx: float,
                            cy: float, rot_cols: list[tuple[int, int]], n_expr: int, want_lids: bool,
                            want_shape: bool = False, log_focal: bool = False,
                            rows: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
                            ) -> "ProjectedJacobians":
        """Pixels and their Jacobians in one fused pass (exact: equals ``project``'s Jacobian times
        :meth:`jacobians`, without forming the (T, R, 3, ·) intermediates).

        rot_cols: (joint, axis-angle component) per rotation column; n_expr: leading expression columns.
        ``rows(uv) -> (scale (T, R), residual (T, R, 2))``, optional: every Jacobian row is multiplied by
        its point's scale (e.g. √IRLS weight / σ) and the residual is stored as the last column, so one
        batched product ``JᵀJ`` gives the Gauss–Newton matrix and gradient together.

        Returns a :class:`ProjectedJacobians`: ``J`` (T, R, 2, D [+ Ds] [+ 1]) with columns
        [rot_cols[:3] | transl 3 | rot_cols[3:] | expr n_expr | eyelids 2? | shape S? | log f? | residual?]
        (the fitter's layout, then the shared block), px per metre / rad / coefficient."""
        T, U = rot15.shape[0], self.U
        fw = self.forward(shape, expr, rot15, transl, eyelids)
        uv, P = project(fw.points, focal, cx, cy)                              # (T, U, 2), (T, U, 2, 3)
        scale = res = None
        if rows is not None:
            scale, res = rows(uv)
            P = P * scale[..., None, None]
        Bu, Bj = self._linear_basis(n_expr, want_lids, want_shape)           # (U, 3, K), (J·3, K)
        K = Bu.shape[-1]
        nr = len(rot_cols)
        D = nr + 3 + K + int(want_shape and log_focal) + int(rows is not None)
        Jf = P.new_empty(T, U, 2, D)
        Jf[..., 3:6] = P                                                       # translation
        M3 = fw.M[..., :3]
        PM = P @ M3                                                            # (T, U, 2, 3)
        Jr = right_jacobian(rot15.reshape(T, N_JOINTS, 3))
        desc = self._descendants()
        pd = self.posedirs.reshape(4, 9, U * 3)
        # y_j(u) = A_j [v_u; 1]: each point moved by each joint alone, weighted → (T, U, J, 3)
        vh = torch.cat([fw.v, fw.v.new_ones(T, U, 1)], -1)                     # (T, U, 4)
        y = (vh @ fw.A.permute(0, 3, 1, 2).reshape(T, 4, N_JOINTS * 3)).reshape(T, U, N_JOINTS, 3)
        wy = y * self.weights[None, :, :, None]
        col = {c: (n if n < 3 else n + 3) for n, c in enumerate(rot_cols)}
        by_joint: dict[int, list[int]] = {}
        for (i, k) in rot_cols:
            by_joint.setdefault(i, []).append(k)
        for i, ks in by_joint.items():
            d = desc[i]
            if i == 0:
                S = fw.xu - fw.tg[:, None, 0]                                  # every point follows the root
            else:
                S = (wy[:, :, d].sum(2) if len(d) > 1 else wy[:, :, i]) \
                    - self.weights[:, d].sum(1)[None, :, None] * fw.tg[:, None, i]
            # d uv_a / dφ = S × P_a with φ = Rg_i J_r(θ_i) δ
            SxP = torch.linalg.cross(S[:, :, None, :].expand_as(P), P, dim=-1)
            G = (fw.Rg[:, i] @ Jr[:, i])[:, :, ks]                              # (T, 3, nk)
            Jc = (SxP.reshape(T, U * 2, 3) @ G).reshape(T, U, 2, len(ks))
            if i >= 1:  # pose correctives of joint i
                dR = fw.R[:, i, None] @ skew(Jr[:, i, :, ks].transpose(1, 2))   # (T, nk, 3, 3)
                dv = (dR.reshape(T, len(ks), 9) @ pd[i - 1]).reshape(T, len(ks), U, 3)
                Jc = Jc + PM @ dv.permute(0, 2, 3, 1)
            for n, k in enumerate(ks):
                Jf[..., col[(i, k)]] = Jc[..., n]
        if K > 0:
            # linear bases (expression, eyelids, shape): joint-regressor part one product per frame,
            # rest-space part (M3 · basis) one product per point
            o = nr + 3
            C = self.joint_operator(fw.Rg).permute(0, 1, 3, 2, 4).reshape(T, N_JOINTS * 3, N_JOINTS * 3)
            Pw = (P[:, :, :, None, :] * self.weights[None, :, None, :, None]).reshape(T, U * 2, N_JOINTS * 3)
            Jf[..., o: o + K] = (Pw @ (C @ Bj)).reshape(T, U, 2, K)
            Xu = PM.permute(1, 0, 2, 3).reshape(U, T * 2, 3)
            Jf[..., o: o + K] += torch.bmm(Xu, Bu).reshape(U, T, 2, K).permute(1, 0, 2, 3)
        if want_shape and log_focal:
            dfu = torch.stack([uv[..., 0] - cx, uv[..., 1] - cy], -1)
            Jf[..., nr + 3 + K] = dfu if scale is None else dfu * scale[..., None]
        if rows is not None:
            Jf[..., -1] = res
        Dx = nr + 3 + K - (self.n_shape if want_shape else 0)
        return ProjectedJacobians(uv=uv, depth=fw.points[..., 2], J=Jf, n_x=Dx)


@dataclass
class Forward:
    """BoundModel.forward: points (T, U, 3) world m; xu (T, U, 3) posed, no translation; M (T, U, 3, 4)
    blended transforms; R / Rg (T, J, 3, 3) local / global joint rotations; tg (T, J, 3) posed joints;
    A (T, J, 3, 4) skinning transforms; v (T, U, 3) rest points with expression and pose correctives."""

    points: torch.Tensor
    xu: torch.Tensor
    M: torch.Tensor
    R: torch.Tensor
    Rg: torch.Tensor
    tg: torch.Tensor
    A: torch.Tensor
    v: torch.Tensor


@dataclass
class ProjectedJacobians:
    """uv (T, R, 2) px; depth (T, R) world z (m, negative in front of the camera); J (T, R, 2, ·) (see
    :meth:`BoundModel.linearize_projected`); n_x: the number of per-frame columns (the shared block, if
    any, follows)."""

    uv: torch.Tensor
    depth: torch.Tensor
    J: torch.Tensor
    n_x: int


def skew(w: torch.Tensor) -> torch.Tensor:
    """(..., 3) → cross-product matrices (..., 3, 3)."""
    x, y, z = w[..., 0], w[..., 1], w[..., 2]
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(w.shape[:-1] + (3, 3))


def right_jacobian(th: torch.Tensor) -> torch.Tensor:
    """SO(3) right Jacobian J_r(θ) (..., 3, 3): R(θ + δ) ≈ R(θ)·exp([J_r δ]×)."""
    t2 = (th * th).sum(-1)[..., None, None]
    t = torch.sqrt(t2.clamp_min(1e-12))
    small = t2 < 1e-6
    a = torch.where(small, 0.5 - t2 / 24.0, (1 - torch.cos(t)) / t2.clamp_min(1e-12))
    b = torch.where(small, 1.0 / 6.0 - t2 / 120.0, (t - torch.sin(t)) / (t2 * t).clamp_min(1e-18))
    K = skew(th)
    eye = torch.eye(3, dtype=th.dtype, device=th.device)
    return eye - a * K + b * (K @ K)


def matvec3(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Batched small product A (..., m, 3) @ B (..., 3, k), broadcasting (batched matmul measured 3–4× faster
    than three broadcast multiply-adds on CPU)."""
    return torch.matmul(A, B)


def project(points: torch.Tensor, focal: torch.Tensor, cx: float, cy: float) -> tuple[torch.Tensor, torch.Tensor]:
    """World points (..., 3) → pixels (..., 2) and d(pixels)/d(points) (..., 2, 3), with the fitter's camera
    (``cam_R = diag(1, -1, -1)``, ``cam_t = 0``): u = f·x/(−z) + cx, v = f·y/z + cy."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    iz = 1.0 / z
    u = -focal * x * iz + cx
    v = focal * y * iz + cy
    zero = torch.zeros_like(x)
    du = torch.stack([-focal * iz, zero, focal * x * iz * iz], dim=-1)
    dv = torch.stack([zero, focal * iz, -focal * y * iz * iz], dim=-1)
    return torch.stack([u, v], dim=-1), torch.stack([du, dv], dim=-2)
