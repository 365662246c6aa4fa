"""A small software rasterizer (numpy only, no OpenGL).

Conventions (:mod:`flamecap.contract.conventions`): vertices in OpenCV camera space (x right, y down,
z forward, metres), intrinsics ``K`` in pixels, image size ``(width, height)``, pixel ``(row r, col c)``
has its centre at ``(c + 0.5, r + 0.5)``; a pixel is covered by a triangle when its centre is inside it.

Algorithm: every triangle's pixel bounding box is expanded into candidate pixels in one vectorised pass
(chunked to bound memory), screen-space barycentrics decide coverage, perspective-correct barycentrics
give the depth, and a sort-based scatter-min keeps the nearest fragment per pixel. Triangles with any
vertex at ``z <= near`` are dropped (no clipping): keep the mesh in front of the camera.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

_CHUNK = 2_000_000  # candidate pixels per vectorised pass (bounds memory to ~100 MB)


@dataclass
class Fragments:
    """Per-pixel result of :func:`rasterize`.

    depth (H, W) float32 camera z in metres (``inf`` on background); face_id (H, W) int32 (−1 on
    background); bary (H, W, 3) float32 perspective-correct barycentrics of ``faces[face_id]`` (0 on
    background); image_size (width, height)."""

    depth: np.ndarray
    face_id: np.ndarray
    bary: np.ndarray
    image_size: tuple[int, int]

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool: pixels covered by the mesh."""
        return self.face_id >= 0

    def interpolate(self, vertex_attr: np.ndarray, faces: np.ndarray, background: float = 0.0) -> np.ndarray:
        """Interpolate per-vertex attributes ``(V, C)`` to pixels ``(H, W, C)`` (``background`` elsewhere)."""
        attr = np.asarray(vertex_attr, dtype=np.float32)
        squeeze = attr.ndim == 1
        if squeeze:
            attr = attr[:, None]
        H, W = self.face_id.shape
        out = np.full((H, W, attr.shape[1]), background, dtype=np.float32)
        m = self.mask
        tri = np.asarray(faces)[self.face_id[m]]                      # (M, 3)
        out[m] = np.einsum("mk,mkc->mc", self.bary[m], attr[tri])
        return out[..., 0] if squeeze else out


def project(vertices_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection: OpenCV camera-space points ``(..., 3)`` metres → pixels ``(..., 2)``."""
    p = np.asarray(vertices_cam, dtype=np.float64)
    uvw = p @ np.asarray(K, dtype=np.float64).T
    return uvw[..., :2] / uvw[..., 2:3]


def _check(vertices_cam, faces, K, image_size):
    v = np.asarray(vertices_cam, dtype=np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices_cam must be (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or f.dtype.kind not in "iu":
        raise ValueError(f"faces must be integer (F, 3), got {f.shape} {f.dtype}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces index outside 0..{len(v) - 1}")
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be (3, 3), got {K.shape}")
    w, h = (int(x) for x in image_size)
    if w <= 0 or h <= 0:
        raise ValueError(f"image_size must be positive (width, height), got {image_size}")
    return v, f.astype(np.int64), K, w, h


def rasterize(vertices_cam: np.ndarray, faces: np.ndarray, K: np.ndarray, image_size: tuple[int, int],
              cull_backfaces: bool = False, near: float = 1e-4) -> Fragments:
    """Rasterize a triangle mesh.

    vertices_cam (V, 3) OpenCV camera space, metres; faces (F, 3) int; K (3, 3) px; image_size (w, h).
    ``cull_backfaces`` drops triangles facing away from the camera (winding counter-clockwise as seen
    from the camera = front, FLAME's convention). Returns :class:`Fragments`."""
    v, f, K, W, H = _check(vertices_cam, faces, K, image_size)
    depth = np.full(H * W, np.inf, dtype=np.float64)
    face_id = np.full(H * W, -1, dtype=np.int64)
    bary = np.zeros((H * W, 3), dtype=np.float64)
    if len(f) == 0:
        return Fragments(depth.reshape(H, W).astype(np.float32), face_id.reshape(H, W).astype(np.int32),
                         bary.reshape(H, W, 3).astype(np.float32), (W, H))
    z = v[:, 2]
    uv = project(np.where(z[:, None] > near, v, np.array([0.0, 0.0, 1.0])), K)
    tz = z[f]                                                       # (F, 3)
    tuv = uv[f]                                                     # (F, 3, 2)
    a, b, c = tuv[:, 0], tuv[:, 1], tuv[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    keep = np.all(tz > near, axis=1) & (np.abs(area) > 1e-12)
    if cull_backfaces:
        # image y points down, so a counter-clockwise (front-facing) triangle has negative signed area
        keep &= area < 0
    xmin = np.ceil(tuv[..., 0].min(1) - 0.5).clip(0, W)
    xmax = np.floor(tuv[..., 0].max(1) - 0.5).clip(-1, W - 1)
    ymin = np.ceil(tuv[..., 1].min(1) - 0.5).clip(0, H)
    ymax = np.floor(tuv[..., 1].max(1) - 0.5).clip(-1, H - 1)
    keep &= (xmax >= xmin) & (ymax >= ymin)
    tri = np.nonzero(keep)[0]
    if len(tri) == 0:
        return Fragments(depth.reshape(H, W).astype(np.float32), face_id.reshape(H, W).astype(np.int32),
                         bary.reshape(H, W, 3).astype(np.float32), (W, H))
    bw = (xmax[tri] - xmin[tri] + 1).astype(np.int64)
    bh = (ymax[tri] - ymin[tri] + 1).astype(np.int64)
    n_cand = bw * bh
    # chunk triangles so that each pass expands at most ~_CHUNK candidates
    csum = np.cumsum(n_cand)
    starts = [0]
    while starts[-1] < len(tri):
        base = csum[starts[-1] - 1] if starts[-1] > 0 else 0
        nxt = int(np.searchsorted(csum, base + _CHUNK, side="right"))
        starts.append(max(nxt, starts[-1] + 1))
    inv_area = 1.0 / area
    for s0, s1 in zip(starts[:-1], starts[1:]):
        t = tri[s0:s1]
        cnt = n_cand[s0:s1]
        owner = np.repeat(np.arange(len(t)), cnt)                   # candidate → local triangle
        first = np.cumsum(cnt) - cnt
        local = np.arange(owner.size) - first[owner]
        bw_o = bw[s0:s1][owner]
        px = xmin[t][owner] + local % bw_o
        py = ymin[t][owner] + local // bw_o
        cx, cy = px + 0.5, py + 0.5
        ti = t[owner]
        A, B, C = a[ti], b[ti], c[ti]
        # screen-space barycentrics via edge functions
        l0 = ((B[:, 0] - cx) * (C[:, 1] - cy) - (B[:, 1] - cy) * (C[:, 0] - cx)) * inv_area[ti]
        l1 = ((C[:, 0] - cx) * (A[:, 1] - cy) - (C[:, 1] - cy) * (A[:, 0] - cx)) * inv_area[ti]
        l2 = 1.0 - l0 - l1
        inside = (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9)
        if not inside.any():
            continue
        ti, l0, l1, l2 = ti[inside], l0[inside], l1[inside], l2[inside]
        pix = (py[inside] * W + px[inside]).astype(np.int64)
        zt = tz[ti]
        w0, w1, w2 = l0 / zt[:, 0], l1 / zt[:, 1], l2 / zt[:, 2]
        inv_z = w0 + w1 + w2
        d = 1.0 / inv_z
        # scatter-min: sort by (pixel, depth), keep the first of each pixel, then merge with the buffer
        order = np.lexsort((d, pix))
        ps = pix[order]
        firsts = order[np.r_[True, ps[1:] != ps[:-1]]]
        p1, d1 = pix[firsts], d[firsts]
        better = d1 < depth[p1]
        sel = firsts[better]
        p1 = p1[better]
        depth[p1] = d1[better]
        face_id[p1] = ti[sel]
        bary[p1] = np.stack([w0[sel], w1[sel], w2[sel]], 1) / inv_z[sel, None]
    return Fragments(depth.reshape(H, W).astype(np.float32), face_id.reshape(H, W).astype(np.int32),
                     bary.reshape(H, W, 3).astype(np.float32), (W, H))


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``(V, 3)`` (counter-clockwise winding = outward)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return n / np.where(norm > 0, norm, 1.0)


def shade(fragments: Fragments, vertices_cam: np.ndarray, faces: np.ndarray, albedo: np.ndarray | None = None,
          light_dir: np.ndarray = (0.3, -0.4, -1.0), ambient: float = 0.3, diffuse: float = 0.7,
          specular: float = 0.0, shininess: float = 20.0) -> np.ndarray:
    """Smooth-shaded Lambert (+ optional Blinn-Phong) colour ``(H, W, 3)`` float32 in [0, 1], 0 on background.

    albedo (V, 3) in [0, 1] or None (light grey); ``light_dir`` (3,) camera space, pointing from the
    surface toward the light (default: upper-left, in front); normals face the camera (two-sided)."""
    f = np.asarray(faces, dtype=np.int64)
    v = np.asarray(vertices_cam, dtype=np.float64)
    m = fragments.mask
    H, W = m.shape
    rgb = np.zeros((H, W, 3), dtype=np.float32)
    if not m.any():
        return rgb
    n = fragments.interpolate(vertex_normals(v, f), f)[m]
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    pos = fragments.interpolate(v, f)[m]
    view = -pos / np.maximum(np.linalg.norm(pos, axis=1, keepdims=True), 1e-12)
    n = np.where((np.sum(n * view, 1) < 0)[:, None], -n, n)       # two-sided
    L = np.asarray(light_dir, dtype=np.float64)
    L = L / np.linalg.norm(L)
    lam = np.clip(n @ L, 0.0, None)[:, None]
    if albedo is None:
        col = np.full((int(m.sum()), 3), 0.75, dtype=np.float32)
    else:
        col = fragments.interpolate(np.asarray(albedo, dtype=np.float32), f)[m]
    out = col * (ambient + diffuse * lam)
    if specular > 0:
        h = L[None] + view
        h /= np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
        out = out + specular * np.clip(np.sum(n * h, 1), 0, None)[:, None] ** shininess
    rgb[m] = np.clip(out, 0.0, 1.0)
    return rgb


def render_rgb(vertices_cam: np.ndarray, faces: np.ndarray, K: np.ndarray, image_size: tuple[int, int],
               albedo: np.ndarray | None = None, light_dir=(0.3, -0.4, -1.0), ambient: float = 0.3,
               diffuse: float = 0.7, specular: float = 0.0, background: np.ndarray | None = None,
               fragments: Fragments | None = None) -> np.ndarray:
    """Rasterize + shade → uint8 RGB ``(H, W, 3)``. ``background``: (H, W, 3) uint8 image, an RGB triple
    (0..255) or None (black)."""
    frags = fragments if fragments is not None else rasterize(vertices_cam, faces, K, image_size)
    rgb = shade(frags, vertices_cam, faces, albedo, light_dir, ambient, diffuse, specular)
    W, H = frags.image_size
    if background is None:
        bg = np.zeros((H, W, 3), dtype=np.float32)
    else:
        bg = np.broadcast_to(np.asarray(background, dtype=np.float32) / 255.0, (H, W, 3))
    out = np.where(frags.mask[..., None], rgb, bg)
    return (out * 255.0 + 0.5).clip(0, 255).astype(np.uint8)


def vertex_visibility(vertices_cam: np.ndarray, faces: np.ndarray, K: np.ndarray, image_size: tuple[int, int],
                      tol: float = 2e-3, fragments: Fragments | None = None) -> np.ndarray:
    """(V,) bool: the vertex projects inside the image and is not hidden behind the surface.

    A vertex is visible when the triangle covering its pixel is one of its own triangles, or when its
    depth is within ``tol`` metres of that triangle's plane along the vertex's viewing ray (exact, not the
    pixel-centre depth, so coarse pixels do not hide front vertices). Background pixels count as visible
    (silhouette vertices)."""
    v = np.asarray(vertices_cam, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    frags = fragments if fragments is not None else rasterize(v, f, K, image_size)
    W, H = frags.image_size
    uv = project(np.where(v[:, 2:3] > 1e-4, v, np.array([0.0, 0.0, 1.0])), K)
    col = np.floor(uv[:, 0]).astype(np.int64)
    row = np.floor(uv[:, 1]).astype(np.int64)
    inside = (v[:, 2] > 1e-4) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    idx = np.nonzero(inside)[0]
    fid = frags.face_id[row[idx], col[idx]].astype(np.int64)
    vis = np.zeros(len(v), dtype=bool)
    bg = fid < 0
    vis[idx[bg]] = True
    idx, fid = idx[~bg], fid[~bg]
    tri = f[fid]                                                     # (M, 3)
    own = np.any(tri == idx[:, None], axis=1)
    vis[idx[own]] = True
    idx, tri = idx[~own], tri[~own]
    if len(idx):
        p0, p1, p2 = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
        n = np.cross(p1 - p0, p2 - p0)
        ray = v[idx] / v[idx, 2:3]                                   # ray through the vertex, z = 1
        denom = np.sum(n * ray, 1)
        t = np.sum(n * p0, 1) / np.where(np.abs(denom) > 1e-15, denom, np.inf)  # surface depth on that ray
        t = np.where(t > 0, t, np.inf)
        vis[idx] = v[idx, 2] <= t + tol
    return vis


def _to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {img.shape}")
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8) if img.dtype.kind == "f" else img.astype(np.uint8)
    return np.ascontiguousarray(img)


def overlay_wireframe(image: np.ndarray, vertices_cam: np.ndarray, faces: np.ndarray, K: np.ndarray,
                      color=(0, 255, 0), thickness: int = 1, visible_only: bool = True) -> np.ndarray:
    """Draw the mesh edges over a copy of ``image`` (H, W, 3) uint8 RGB; with ``visible_only`` only edges
    whose two vertices are visible (:func:`vertex_visibility`). Returns uint8 (H, W, 3)."""
    import cv2
    img = _to_uint8_rgb(image).copy()
    H, W = img.shape[:2]
    f = np.asarray(faces, dtype=np.int64)
    uv = project(vertices_cam, K)
    edges = np.unique(np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1), axis=0)
    if visible_only:
        vis = vertex_visibility(vertices_cam, f, K, (W, H))
        edges = edges[vis[edges[:, 0]] & vis[edges[:, 1]]]
    shift = 4  # sub-pixel precision; pixel centres at i + 0.5 → cv2 integer coordinates at i
    pts = np.round((uv - 0.5) * (1 << shift)).astype(np.int64)
    ok = np.all(np.isfinite(uv[edges].reshape(len(edges), -1)), axis=1)
    lines = pts[edges[ok]].reshape(-1, 2, 2).astype(np.int32)
    cv2.polylines(img, list(lines), False, tuple(int(c) for c in color), thickness, cv2.LINE_AA, shift)
    return img


def overlay_mesh(image: np.ndarray, vertices_cam: np.ndarray, faces: np.ndarray, K: np.ndarray,
                 alpha: float = 0.6, albedo: np.ndarray | None = None, light_dir=(0.3, -0.4, -1.0)) -> np.ndarray:
    """Blend a shaded render of the mesh over a copy of ``image`` (H, W, 3) uint8 with opacity ``alpha``."""
    img = _to_uint8_rgb(image)
    H, W = img.shape[:2]
    frags = rasterize(vertices_cam, faces, K, (W, H))
    rgb = shade(frags, vertices_cam, faces, albedo, light_dir) * 255.0
    out = img.astype(np.float32)
    m = frags.mask
    out[m] = (1 - alpha) * out[m] + alpha * rgb[m]
    return (out + 0.5).clip(0, 255).astype(np.uint8)


def overlay_points(image: np.ndarray, points: np.ndarray, color=(255, 0, 0), radius: int = 1,
                   mask: np.ndarray | None = None) -> np.ndarray:
    """Draw 2D points ``(K, 2)`` px (NaN skipped, optional (K,) bool ``mask``) over a copy of ``image``."""
    import cv2
    img = _to_uint8_rgb(image).copy()
    p = np.asarray(points, dtype=np.float64)
    ok = np.all(np.isfinite(p), axis=1) if mask is None else np.asarray(mask, bool) & np.all(np.isfinite(p), 1)
    shift = 4
    for x, y in np.round((p[ok] - 0.5) * (1 << shift)).astype(np.int64):
        cv2.circle(img, (int(x), int(y)), radius << shift, tuple(int(c) for c in color), -1, cv2.LINE_AA, shift)
    return img
