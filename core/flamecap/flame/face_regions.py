"""Rig a FLAME-frame head mesh from a few anchors (numpy only): skinning weights, expression basis,
eyelid blendshapes, pose correctives, face mask, skin albedo and UVs.

Every function works on an arbitrary head mesh in FLAME's frame (metres, +Y up, face looking +Z) given
its five joints (root, neck, jaw, eye_l, eye_r), the 3D positions of the 68 iBUG landmarks on its surface
and the boolean masks of its two eyeball components. The synthetic generator and the FLAME-topology test
head (``flamecap.flame.synthetic``) both use them, so the two models are rigged the same way.

iBUG-68 order (subject's right = FLAME −X comes first): 0–16 jaw line, 17–21 right brow, 22–26 left brow,
27–30 nose bridge, 31–35 nostrils, 36–41 right eye, 42–47 left eye, 48–59 outer lips, 60–67 inner lips.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import closest_barycentric
from ..render.raster import vertex_normals

ROOT, NECK, JAW, EYE_L, EYE_R = range(5)

# Expression components 0..16 built by :func:`expression_basis` (then localised random modes).
SEMANTIC_EXPRESSIONS: tuple[str, ...] = (
    "smile",              # both mouth corners up/back/out, cheeks raised
    "mouth_stretch",      # mouth corners pulled sideways (wide mouth)
    "lip_pucker",         # lips forward, corners toward the midline
    "lips_press",         # upper lip down, lower lip up and slightly rolled in
    "lips_part",          # upper lip up, lower lip down (mouth opens without the jaw)
    "brow_raise",         # both brows and the forehead up
    "brow_furrow",        # inner brows down and toward the midline
    "cheek_puff",         # cheeks pushed outward along their normals
    "eye_blink_left",     # subject's left (+X) upper lid closes
    "eye_blink_right",    # subject's right (−X) upper lid closes
    "squint",             # lower lids and upper cheeks up, both eyes
    "nose_sneer",         # nostril wings and the upper lip beside the nose up
    "mouth_frown",        # both mouth corners down
    "mouth_left",         # whole mouth shifted toward the subject's left (+X)
    "smile_left",         # left corner only (asymmetric smile)
    "smile_right",        # right corner only
    "brow_inner_raise",   # inner brows up (sad / worried)
)


@dataclass(frozen=True)
class HeadAnchors:
    """What the rig functions need to know about a head mesh.

    joints (5, 3) m: root, neck, jaw, eye_l (+X), eye_r; lmk68 (68, 3) m on the surface; eyeball_l /
    eyeball_r (V,) bool masks of the two eyeball components."""

    joints: np.ndarray
    lmk68: np.ndarray
    eyeball_l: np.ndarray
    eyeball_r: np.ndarray

    @property
    def eyeballs(self) -> np.ndarray:
        return self.eyeball_l | self.eyeball_r

    def eye_radius(self, vertices: np.ndarray, side: int) -> float:
        """Mean distance of an eyeball's vertices to its joint (side: EYE_L or EYE_R)."""
        mask = self.eyeball_l if side == EYE_L else self.eyeball_r
        return float(np.linalg.norm(vertices[mask] - self.joints[side], axis=1).mean())


# ----------------------------------------------------------------------------------------------- helpers

def smoothstep(x: np.ndarray) -> np.ndarray:
    """C1 step: 0 for x <= 0, 1 for x >= 1."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def gaussian(vertices: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """exp(−|v − c|² / 2r²) per vertex, (V,)."""
    d2 = np.sum((vertices - np.asarray(centre)[None]) ** 2, axis=1)
    return np.exp(-0.5 * d2 / radius ** 2)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd test of 2D points (N, 2) against a closed polygon (M, 2) → (N,) bool."""
    x, y = points[:, 0:1], points[:, 1:2]
    a = polygon[None, :, :]
    b = np.roll(polygon, -1, axis=0)[None, :, :]
    cond = (a[..., 1] > y) != (b[..., 1] > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = a[..., 0] + (y - a[..., 1]) * (b[..., 0] - a[..., 0]) / (b[..., 1] - a[..., 1])
    return (np.sum(cond & (x < xc), axis=1) % 2) == 1


def distance_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Euclidean distance of points (N, D) to an open polyline (M, D) → (N,)."""
    a, b = line[:-1], line[1:]
    ab = b - a
    ap = points[:, None, :] - a[None]
    t = np.clip(np.sum(ap * ab[None], -1) / np.maximum(np.sum(ab * ab, -1), 1e-18)[None], 0.0, 1.0)
    d = ap - t[..., None] * ab[None]
    return np.sqrt(np.min(np.sum(d * d, -1), axis=1))


def closest_surface_points(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                           allowed_faces: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Closest point on a triangle mesh for each query point: face index (K,) and barycentrics (K, 3).

    ``allowed_faces`` (F,) bool restricts the search (e.g. to the skin)."""
    f = np.asarray(faces, dtype=np.int64)
    fid_all = np.arange(len(f)) if allowed_faces is None else np.nonzero(allowed_faces)[0]
    A, B, C = (vertices[f[fid_all, k]] for k in range(3))
    out_f = np.empty(len(points), dtype=np.int64)
    out_b = np.empty((len(points), 3))
    for i, p in enumerate(np.asarray(points, dtype=np.float64)):
        bary = closest_barycentric(p, A, B, C)
        q = bary[:, 0:1] * A + bary[:, 1:2] * B + bary[:, 2:3] * C
        j = int(np.argmin(np.sum((q - p) ** 2, axis=1)))
        out_f[i] = fid_all[j]
        out_b[i] = bary[j]
    return out_f, out_b


def connected_components(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """Component label per vertex (V,) int, labels ordered by decreasing component size."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as cc

    f = np.asarray(faces, dtype=np.int64)
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    g = coo_matrix((np.ones(len(i)), (i, j)), shape=(n_vertices, n_vertices))
    _, labels = cc(g, directed=False)
    counts = np.bincount(labels)
    order = np.argsort(-counts, kind="stable")
    remap = np.empty_like(order)
    remap[order] = np.arange(len(order))
    return remap[labels]


# ----------------------------------------------------------------------------------------------- regions

def mouth_frame(lmk68: np.ndarray) -> dict[str, np.ndarray]:
    """Mouth anchors: centre (3,), corners (2, 3) [right (−X), left (+X)], half width (float)."""
    corners = lmk68[[48, 54]]
    centre = lmk68[[62, 66]].mean(0)
    return {"centre": centre, "corners": corners, "half_width": 0.5 * float(np.linalg.norm(corners[1] - corners[0]))}


def lower_face_fraction(vertices: np.ndarray, joints: np.ndarray, lmk68: np.ndarray,
                        sharp: bool = True) -> np.ndarray:
    """How much each vertex belongs to the lower face (moves with the jaw), (V,) in [0, 1].

    Measured as the angle about the jaw joint's X axis relative to the mouth line: vertices below the
    mouth line and in front of the jaw joint are 1. ``sharp``: a crisp split at the lips (for lip
    expressions); otherwise the boundary softens and drops beside the mouth (skinning)."""
    jaw = joints[JAW]
    mf = mouth_frame(lmk68)
    rel = vertices - jaw[None]
    phi = np.arctan2(rel[:, 1], rel[:, 2])                        # 0 = straight ahead, −π/2 = down
    mrel = mf["centre"] - jaw
    phi_m = np.arctan2(mrel[1], mrel[2])
    hw = mf["half_width"]
    outside = np.maximum(np.abs(vertices[:, 0] - mf["centre"][0]) - hw, 0.0)   # metres beyond the corners
    width = 0.015 if sharp else 0.03                                        # radians at the lips
    upper = phi_m - (0.0 if sharp else 4.0) * outside - 0.5 * width
    soft = width + (2.0 if sharp else 8.0) * outside
    below_mouth = smoothstep((upper + 0.5 * soft - phi) / soft)
    # chin → throat: hand over to the neck under the jaw
    chin = lmk68[8] - jaw
    phi_chin = np.arctan2(chin[1], chin[2])
    throat = smoothstep((phi - (phi_chin - 0.55)) / 0.35)
    in_front = smoothstep((rel[:, 2] - 0.005) / 0.03)
    # beyond the jaw line laterally (ears, back of cheeks) nothing moves
    lateral = smoothstep((np.abs(lmk68[0, 0] - lmk68[16, 0]) * 0.5 + 0.004 - np.abs(vertices[:, 0])) / 0.012)
    return below_mouth * throat * in_front * lateral


def skinning_weights(vertices: np.ndarray, anchors: HeadAnchors) -> np.ndarray:
    """Linear-blend skinning weights (V, 5), rows sum to 1.

    Eyeballs → their eye joint; lower face (below the mouth line, smooth falloff over the cheeks and
    under the chin) → jaw; the rest of the head → neck; the bottom of the neck → root."""
    V = len(vertices)
    w = np.zeros((V, 5))
    jaw = lower_face_fraction(vertices, anchors.joints, anchors.lmk68, sharp=False)
    root_y, neck_y = anchors.joints[ROOT, 1], anchors.joints[NECK, 1]
    head = smoothstep((vertices[:, 1] - (root_y + 0.35 * (neck_y - root_y))) / (0.5 * (neck_y - root_y)))
    w[:, JAW] = jaw
    w[:, NECK] = (1.0 - jaw) * head
    w[:, ROOT] = (1.0 - jaw) * (1.0 - head)
    for side, mask in ((EYE_L, anchors.eyeball_l), (EYE_R, anchors.eyeball_r)):
        w[mask] = 0.0
        w[mask, side] = 1.0
    return w / w.sum(1, keepdims=True)


def regress_joint(vertices: np.ndarray, candidates: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Non-negative weights (V,) summing to 1 over ``candidates`` (indices) whose weighted mean is
    ``target`` (3,) (as close as the candidates' convex hull allows), small and spread out."""
    from scipy.optimize import nnls

    P = vertices[candidates]
    n = len(candidates)
    lam, mu = 1e3, 1e-3
    M = np.vstack([lam * P.T, lam * np.ones((1, n)), np.sqrt(mu) * np.eye(n)])
    b = np.concatenate([lam * np.asarray(target, dtype=np.float64), [lam], np.zeros(n)])
    x, _ = nnls(M, b, maxiter=50 * n)
    row = np.zeros(len(vertices))
    row[candidates] = x / x.sum()
    return row


def face_region_mask(vertices: np.ndarray, faces: np.ndarray, anchors: HeadAnchors) -> np.ndarray:
    """Face region (V,) bool: skin inside the jaw line and up to a forehead band above the brows,
    facing forward; eyeballs excluded."""
    lm = anchors.lmk68
    brow_up = np.array([0.0, 0.022, 0.0])
    outline = np.concatenate([lm[0:17, :2], (lm[26:16:-1] + brow_up)[:, :2]])
    inside = points_in_polygon(vertices[:, :2], outline)
    n = vertex_normals(vertices, faces)
    zmin = min(lm[0, 2], lm[16, 2]) - 0.005
    return inside & (n[:, 2] > 0.1) & (vertices[:, 2] > zmin) & ~anchors.eyeballs


def cylindrical_uv(vertices: np.ndarray) -> np.ndarray:
    """Cylindrical UV (V, 2) in [0, 1]: u = azimuth about +Y (face at u = 0.5), v = height."""
    u = (np.arctan2(vertices[:, 0], vertices[:, 2]) + np.pi) / (2 * np.pi)
    y = vertices[:, 1]
    v = (y - y.min()) / max(float(np.ptp(y)), 1e-9)
    return np.clip(np.stack([u, v], 1), 0.0, 1.0)


# ----------------------------------------------------------------------------------------------- eyelids

def _eye_landmarks(lmk68: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(corners (2,3), upper lid (2,3), lower lid (2,3)) for EYE_L (+X, iBUG 42–47) / EYE_R (36–41)."""
    b = 42 if side == EYE_L else 36
    return lmk68[[b, b + 3]], lmk68[[b + 1, b + 2]], lmk68[[b + 5, b + 4]]


def _eye_angles(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Azimuth about +Y (0 = +Z), elevation and radius of eye-centred points (N, 3)."""
    az = np.arctan2(p[:, 0], p[:, 2])
    el = np.arctan2(p[:, 1], np.hypot(p[:, 0], p[:, 2]))
    return az, el, np.linalg.norm(p, axis=1)


def eyelid_closing(vertices: np.ndarray, anchors: HeadAnchors, side: int, close_at: float = 0.3,
                   lid_thickness: float = 0.0012) -> np.ndarray:
    """Displacement (V, 3) m that closes one eye's upper lid (and lifts the lower lid a little).

    In eye-centred angles the upper lid margin (iBUG upper-lid points) is carried down to a closing line
    ``close_at`` of the way up from the lower margin, the skin above it stretching down to a crease
    band; lid skin is kept ``lid_thickness`` in front of the eyeball. Skin folded in behind the eyeball
    stays put (hidden by the closed lid)."""
    c = anchors.joints[side]
    r_e = anchors.eye_radius(vertices, side)
    corners, upper, lower = _eye_landmarks(anchors.lmk68, side)
    ca, ce, _ = _eye_angles(corners - c)
    ua, ue, _ = _eye_angles(upper - c)
    la, le, _ = _eye_angles(lower - c)
    o = np.argsort(np.concatenate([ca, ua]))
    up_a, up_e = np.concatenate([ca, ua])[o], np.concatenate([ce, ue])[o]
    o = np.argsort(np.concatenate([ca, la]))
    lo_a, lo_e = np.concatenate([ca, la])[o], np.concatenate([ce, le])[o]
    p = vertices - c[None]
    az, el, rho = _eye_angles(p)
    th_u = np.interp(az, up_a, up_e)
    th_l = np.interp(az, lo_a, lo_e)
    th_c = th_l + close_at * (th_u - th_l)
    th_cr = th_u + 0.45
    th_fl = th_l - 0.3
    skin = ~anchors.eyeballs
    inner = (rho < r_e + 0.3 * lid_thickness) & (el > th_l - 0.05) & (el < th_u + 0.05)
    new_el = el.copy()
    up = skin & ~inner & (el >= th_c) & (el <= th_cr)
    t = np.clip((el - th_u) / np.maximum(th_cr - th_u, 1e-6), 0.0, 1.0)
    new_el[up] = (th_c + t * (th_cr - th_c))[up]
    lo = skin & ~inner & (el < th_c) & (el >= th_fl)
    t = np.clip((el - th_fl) / np.maximum(th_l - th_fl, 1e-6), 0.0, 1.0)
    new_el[lo] = (th_fl + t * (th_c - 0.01 - th_fl))[lo]
    moved = up | lo
    new_rho = np.where(moved, np.maximum(rho, r_e + lid_thickness), rho)
    dir_xz = np.stack([np.sin(az), np.cos(az)], 1)
    new = np.stack([new_rho * np.cos(new_el) * dir_xz[:, 0], new_rho * np.sin(new_el),
                    new_rho * np.cos(new_el) * dir_xz[:, 1]], 1)
    disp = np.where(moved[:, None], new - p, 0.0)
    a_lo, a_hi = min(ca), max(ca)
    win = smoothstep((az - (a_lo - 0.25)) / 0.25) * smoothstep(((a_hi + 0.25) - az) / 0.25)
    win *= smoothstep((3.2 * r_e - rho) / (1.0 * r_e))
    return disp * win[:, None]


def eyelid_basis(vertices: np.ndarray, anchors: HeadAnchors) -> np.ndarray:
    """FLAME-style eyelid blendshapes (V, 3, 2): [:, :, 0] closes the left (+X) eye, [:, :, 1] the right."""
    return np.stack([eyelid_closing(vertices, anchors, EYE_L), eyelid_closing(vertices, anchors, EYE_R)], 2)


# ----------------------------------------------------------------------------------------------- expressions

def _normalise(d: np.ndarray, amplitude: float) -> np.ndarray:
    m = float(np.max(np.linalg.norm(d, axis=1)))
    return d * (amplitude / m) if m > 0 else d


def expression_basis(vertices: np.ndarray, faces: np.ndarray, anchors: HeadAnchors, n_expr: int,
                     seed: int = 0) -> np.ndarray:
    """Expression blendshapes (V, 3, n_expr) in metres per unit coefficient.

    The first ``len(SEMANTIC_EXPRESSIONS)`` are the named, localised components (max displacement
    3–6 mm per unit); the rest are localised random modes (Gaussian patches on the face, split at the
    lips) with decreasing amplitude (2 mm × 0.93^k). Eyeballs never move."""
    lm = anchors.lmk68
    V = len(vertices)
    skin = (~anchors.eyeballs).astype(np.float64)
    n = vertex_normals(vertices, faces)
    lower = lower_face_fraction(vertices, anchors.joints, lm, sharp=True)
    upper = 1.0 - lower
    mf = mouth_frame(lm)
    mc, (cr, cl) = mf["centre"], mf["corners"]
    hw = mf["half_width"]
    scale = hw / 0.024                                     # the rig's sizes are set for a FLAME-sized mouth
    ex, ey, ez = np.eye(3)
    cheek_r = 0.5 * (lm[48] + lm[36]) + np.array([-0.012, 0.0, 0.0]) * scale
    cheek_l = 0.5 * (lm[54] + lm[45]) + np.array([0.012, 0.0, 0.0]) * scale
    puff_r = 0.5 * (lm[48] + lm[4]) + np.array([0, 0.01, 0.0]) * scale
    puff_l = 0.5 * (lm[54] + lm[12]) + np.array([0, 0.01, 0.0]) * scale
    brow_y = lm[17:27, 1].mean()
    eye_y = 0.5 * (anchors.joints[EYE_L, 1] + anchors.joints[EYE_R, 1])
    lip = gaussian(vertices, mc, 0.017 * scale)
    g = lambda c, r: gaussian(vertices, c, r * scale)  # noqa: E731

    def corner(c, sgn, up, out, back, r=0.016):
        return g(c, r)[:, None] * (up * ey + sgn * out * ex - back * ez)[None]

    def smile_side(c, sgn, cheek):
        return corner(c, sgn, 0.7, 0.45, 0.35) + g(cheek, 0.02)[:, None] * (0.45 * ey + 0.25 * ez)[None]

    comps: list[np.ndarray] = []
    comps.append(_normalise(smile_side(cr, -1, cheek_r) + smile_side(cl, 1, cheek_l), 0.005))
    comps.append(_normalise(corner(cr, -1, -0.15, 1.0, 0.2) + corner(cl, 1, -0.15, 1.0, 0.2), 0.004))
    pucker = lip[:, None] * ez[None] - 0.6 * (g(cr, 0.014)[:, None] * -ex + g(cl, 0.014)[:, None] * ex)
    comps.append(_normalise(pucker, 0.005))
    press = lip[:, None] * (upper[:, None] * (-ey - 0.4 * ez) + lower[:, None] * (ey - 0.4 * ez))
    comps.append(_normalise(press, 0.003))
    part = gaussian(vertices, mc, 0.014 * scale)[:, None] * (upper[:, None] * ey - lower[:, None] * ey)
    comps.append(_normalise(part, 0.004))
    above_eyes = smoothstep((vertices[:, 1] - eye_y) / (brow_y - eye_y + 1e-9))
    brow_c = lm[17:27].mean(0)
    brow_region = gaussian(vertices, brow_c * np.array([0, 1, 1]), 0.045 * scale) * above_eyes
    comps.append(_normalise(brow_region[:, None] * ey[None], 0.005))
    furrow = (g(lm[21], 0.013)[:, None] * (-0.6 * ey + 0.5 * ex)[None]
              + g(lm[22], 0.013)[:, None] * (-0.6 * ey - 0.5 * ex)[None])
    comps.append(_normalise(furrow, 0.004))
    puff = (g(puff_r, 0.02) + g(puff_l, 0.02))[:, None] * n * (1.0 - lip)[:, None]
    comps.append(_normalise(puff, 0.005))
    comps.append(eyelid_closing(vertices, anchors, EYE_L))
    comps.append(eyelid_closing(vertices, anchors, EYE_R))
    squint_lo = np.zeros((V, 3))
    for side, b in ((EYE_L, 42), (EYE_R, 36)):
        lower_lid = lm[[b + 4, b + 5]].mean(0) - np.array([0, 0.004, 0]) * scale
        squint_lo += g(lower_lid, 0.011)[:, None] * (ey + 0.2 * ez)[None]
    comps.append(_normalise(squint_lo * (1.0 - lower)[:, None], 0.003))
    sneer = (g(lm[31], 0.01)[:, None] * (ey - 0.3 * ex)[None] + g(lm[35], 0.01)[:, None] * (ey + 0.3 * ex)[None])
    comps.append(_normalise(sneer * upper[:, None], 0.003))
    comps.append(_normalise(corner(cr, -1, -1.0, 0.1, 0.0) + corner(cl, 1, -1.0, 0.1, 0.0), 0.004))
    comps.append(_normalise(gaussian(vertices, mc, 0.02 * scale)[:, None] * ex[None], 0.004))
    comps.append(_normalise(smile_side(cl, 1, cheek_l), 0.005))
    comps.append(_normalise(smile_side(cr, -1, cheek_r), 0.005))
    inner = (g(lm[21], 0.012) + g(lm[22], 0.012)) * above_eyes
    comps.append(_normalise(inner[:, None] * ey[None], 0.004))
    assert len(comps) == len(SEMANTIC_EXPRESSIONS)

    rng = np.random.default_rng(seed + 7919)
    face = face_region_mask(vertices, faces, anchors)
    face_idx = np.nonzero(face)[0] if face.any() else np.nonzero(skin > 0)[0]
    k = 0
    while len(comps) < n_expr:
        c = vertices[rng.choice(face_idx)]
        r = rng.uniform(0.008, 0.02) * scale
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        side = lower if lower_face_fraction(c[None], anchors.joints, lm)[0] > 0.5 else upper
        field = (gaussian(vertices, c, r) * side)[:, None] * (0.5 * d[None] + 0.5 * n * rng.normal())
        comps.append(_normalise(field, 0.002 * 0.93 ** k))
        k += 1
    E = np.stack(comps[:n_expr], 2) * skin[:, None, None]
    return E


# ----------------------------------------------------------------------------------------------- pose correctives

def pose_correctives(vertices: np.ndarray, anchors: HeadAnchors, weights: np.ndarray, seed: int = 0,
                     amplitude: float = 0.0015, lid_follow: float = 0.5) -> np.ndarray:
    """Pose-corrective blendshapes (V, 3, 36) in FLAME's layout (per non-root joint, the 9 entries of
    R − I, row-major).

    Small smooth fields (≤ ``amplitude`` m per unit entry) confined to where the joint's skinning weight
    blends (4·w·(1 − w)); the eyes add a semantic corrective: the upper lid follows vertical gaze
    (entry R[2,1] = sin(pitch) drives ``lid_follow`` × the eyelid-closing field)."""
    rng = np.random.default_rng(seed + 104729)
    V = len(vertices)
    P = np.zeros((V, 3, 36))
    skin = ~anchors.eyeballs
    idx = np.nonzero(skin)[0]
    for j in (NECK, JAW):
        band = 4.0 * weights[:, j] * (1.0 - weights[:, j])
        if not band.any():
            continue
        for e in range(9):
            field = np.zeros((V, 3))
            for _ in range(3):
                c = vertices[rng.choice(idx)]
                field += gaussian(vertices, c, 0.04)[:, None] * rng.normal(size=3)[None]
            P[:, :, 9 * (j - 1) + e] = _normalise(field * band[:, None], amplitude)
    for side in (EYE_L, EYE_R):
        P[:, :, 9 * (side - 1) + 7] = lid_follow * eyelid_closing(vertices, anchors, side)
    return P


# ----------------------------------------------------------------------------------------------- albedo

SKIN = np.array([0.82, 0.62, 0.52])
BROW = np.array([0.22, 0.15, 0.11])
LIP = np.array([0.72, 0.36, 0.36])
MOUTH = np.array([0.22, 0.07, 0.07])
SCLERA = np.array([0.93, 0.92, 0.89])
IRIS = np.array([0.33, 0.21, 0.12])
PUPIL = np.array([0.03, 0.03, 0.03])
LASH = np.array([0.18, 0.12, 0.10])


def skin_albedo(vertices: np.ndarray, faces: np.ndarray, anchors: HeadAnchors, iris_angle: float = 0.5,
                pupil_angle: float = 0.2) -> np.ndarray:
    """Per-vertex RGB albedo (V, 3) in [0, 1]: skin tone with warmer cheeks, dark brows along the brow
    landmarks, red lips inside the outer-lip contour with a dark mouth line, dark lash lines on the lid
    margins, darker nostrils, and eyeballs with white sclera, brown iris and black pupil (angles in
    radians from the eye's forward +Z axis)."""
    lm = anchors.lmk68
    V = len(vertices)
    scale = mouth_frame(lm)["half_width"] / 0.024
    col = np.tile(SKIN, (V, 1))
    front = vertices[:, 2] > min(lm[0, 2], lm[16, 2])
    # cheeks
    for c in (0.5 * (lm[48] + lm[36]) + [-0.01, 0, 0], 0.5 * (lm[54] + lm[45]) + [0.01, 0, 0]):
        w = 0.35 * gaussian(vertices, c, 0.015 * scale) * front
        col = col * (1 - w[:, None]) + w[:, None] * np.array([0.85, 0.52, 0.47])
    # brows: distance to each brow polyline (lifted a touch), tapered outward
    for line in (lm[17:22], lm[22:27]):
        d = distance_to_polyline(vertices, line + np.array([0.0, 0.002, 0.002]))
        w = smoothstep((0.0055 * scale - d) / (0.0025 * scale)) * front
        col = col * (1 - w[:, None]) + w[:, None] * BROW
    # lips
    outer = lm[48:60]
    z_lip = lm[48:68, 2].min() - 0.01 * scale
    lipm = points_in_polygon(vertices[:, :2], outer[:, :2]) & (vertices[:, 2] > z_lip)
    d_out = distance_to_polyline(vertices[:, :2], np.concatenate([outer, outer[:1]])[:, :2])
    w_lip = np.where(lipm, smoothstep(d_out / (0.0015 * scale) + 0.5), 0.0)
    col = col * (1 - w_lip[:, None]) + w_lip[:, None] * LIP
    inner_line = np.concatenate([lm[[48]], lm[60:65], lm[[54]], lm[64:68], lm[[60]]])
    d_in = distance_to_polyline(vertices, inner_line)
    w_m = smoothstep((0.0022 * scale - d_in) / (0.0012 * scale)) * (vertices[:, 2] > z_lip)
    col = col * (1 - w_m[:, None]) + w_m[:, None] * MOUTH
    deep = lipm & (vertices[:, 2] < lm[60:68, 2].min() - 0.004 * scale)     # mouth interior (if any)
    col[deep] = MOUTH
    # nostrils
    for c in (lm[31] + np.array([0.002, -0.001, -0.004]), lm[35] + np.array([-0.002, -0.001, -0.004])):
        w = 0.8 * gaussian(vertices, c, 0.0028 * scale)
        col = col * (1 - w[:, None]) + w[:, None] * np.array([0.25, 0.12, 0.10])
    # lash lines on the lid margins
    for side in (EYE_L, EYE_R):
        corners, upper, lower = _eye_landmarks(lm, side)
        up_line = np.stack([corners[0], upper[0], upper[1], corners[1]])
        lo_line = np.stack([corners[0], lower[0], lower[1], corners[1]])
        for line, width, k in ((up_line, 0.0022, 0.9), (lo_line, 0.0012, 0.5)):
            d = distance_to_polyline(vertices, line)
            w = k * smoothstep((width * scale - d) / (0.001 * scale)) * ~anchors.eyeballs
            col = col * (1 - w[:, None]) + w[:, None] * LASH
    # eyeballs
    for side, mask in ((EYE_L, anchors.eyeball_l), (EYE_R, anchors.eyeball_r)):
        p = vertices[mask] - anchors.joints[side]
        ang = np.arccos(np.clip(p[:, 2] / np.maximum(np.linalg.norm(p, axis=1), 1e-12), -1, 1))
        w_iris = smoothstep((iris_angle - ang) / 0.12)
        w_pupil = smoothstep((pupil_angle - ang) / 0.08)
        e = SCLERA * (1 - w_iris[:, None]) + IRIS * w_iris[:, None]
        col[mask] = e * (1 - w_pupil[:, None]) + PUPIL * w_pupil[:, None]
    return np.clip(col, 0.0, 1.0)


def rig_head(vertices: np.ndarray, faces: np.ndarray, anchors: HeadAnchors, n_expr: int,
             seed: int = 0) -> dict[str, np.ndarray]:
    """Everything the generator adds to a bare head mesh: weights (V, 5), exprdirs (V, 3, E),
    posedirs (V, 3, 36), eyelid_dirs (V, 3, 2), face_mask (V,), vertex_uv (V, 2), vertex_albedo (V, 3)."""
    v = np.asarray(vertices, dtype=np.float64)
    w = skinning_weights(v, anchors)
    return {
        "weights": w.astype(np.float32),
        "exprdirs": expression_basis(v, faces, anchors, n_expr, seed).astype(np.float32),
        "posedirs": pose_correctives(v, anchors, w, seed).astype(np.float32),
        "eyelid_dirs": eyelid_basis(v, anchors).astype(np.float32),
        "face_mask": face_region_mask(v, faces, anchors),
        "vertex_uv": cylindrical_uv(v).astype(np.float32),
        "vertex_albedo": skin_albedo(v, faces, anchors).astype(np.float32),
    }
