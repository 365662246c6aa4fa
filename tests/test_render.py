"""Software rasterizer: coverage, z-buffer, barycentrics, visibility, shading, overlays."""
import numpy as np
import pytest

from flamecap.contract.conventions import project_points
from flamecap.render import (overlay_mesh, overlay_points, overlay_wireframe, project, rasterize, render_rgb,
                             shade, vertex_visibility)

K = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])
SIZE = (64, 48)


def _quad(z, half=0.1):
    v = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]])
    f = np.array([[0, 3, 2], [0, 2, 1]])  # counter-clockwise as seen from the camera (y down)
    return v, f


def _sphere(n=24, r=0.1, z=0.5):
    th, ph = np.meshgrid(np.linspace(0, np.pi, n), np.linspace(0, 2 * np.pi, 2 * n, endpoint=False), indexing="ij")
    v = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1).reshape(-1, 3) * r
    v[:, 2] += z
    import scipy.spatial
    f = scipy.spatial.ConvexHull(v).simplices
    return v, f


def test_project_matches_contract():
    p = np.random.default_rng(0).normal(size=(10, 3)) + [0, 0, 3]
    np.testing.assert_allclose(project(p, K), project_points(p, K))


def test_single_triangle_pixel_centres():
    # triangle covering the pixel centres with x + y < 10 in the top-left corner (image plane z=1, f=100)
    v = np.array([[-0.32, -0.24, 1.0], [-0.22, -0.24, 1.0], [-0.32, -0.14, 1.0]])  # (0,0),(10,0),(0,10) px
    fr = rasterize(v, np.array([[0, 1, 2]]), K, SIZE)
    r, c = np.mgrid[0:48, 0:64]
    expected = (c + 0.5) + (r + 0.5) <= 10.0
    assert fr.face_id.shape == (48, 64) and fr.depth.dtype == np.float32 and fr.bary.shape == (48, 64, 3)
    np.testing.assert_array_equal(fr.mask, expected)
    assert np.all(np.isinf(fr.depth[~expected])) and np.all(fr.face_id[~expected] == -1)
    np.testing.assert_allclose(fr.depth[expected], 1.0, atol=1e-6)


def test_zbuffer_nearest_wins_and_backface_culling():
    v1, f1 = _quad(0.5)
    v2, f2 = _quad(0.4, half=0.05)
    v = np.concatenate([v1, v2])
    f = np.concatenate([f1, f2 + 4])
    for order in (f, f[::-1]):
        fr = rasterize(v, order, K, SIZE)
        near_px = fr.depth < 0.45
        assert near_px.sum() > 100
        assert np.all(np.isin(order[fr.face_id[near_px]], [4, 5, 6, 7]).all(axis=1))
        np.testing.assert_allclose(fr.depth[near_px], 0.4, atol=1e-6)
    assert rasterize(v1, f1, K, SIZE, cull_backfaces=True).mask.sum() == rasterize(v1, f1, K, SIZE).mask.sum()
    assert rasterize(v1, f1[:, ::-1], K, SIZE, cull_backfaces=True).mask.sum() == 0


def test_perspective_correct_barycentrics_lie_on_pixel_rays():
    v = np.array([[-0.3, -0.2, 0.6], [0.4, -0.1, 1.5], [0.0, 0.3, 0.9]])
    fr = rasterize(v, np.array([[0, 1, 2]]), K, SIZE)
    m = fr.mask
    assert m.sum() > 200
    np.testing.assert_allclose(fr.bary[m].sum(1), 1.0, atol=1e-5)
    p3 = fr.interpolate(v, np.array([[0, 1, 2]]))[m]               # 3D surface point per pixel
    r, c = np.nonzero(m)
    np.testing.assert_allclose(project(p3, K), np.stack([c + 0.5, r + 0.5], 1), atol=1e-3)
    np.testing.assert_allclose(p3[:, 2], fr.depth[m], rtol=1e-5)


def test_sphere_visibility_and_shading():
    v, f = _sphere()
    vis = vertex_visibility(v, f, K, SIZE, tol=5e-3)  # coarse sphere: 7.5° facets
    front = v[:, 2] < 0.5 - 0.05  # well inside the perspective silhouette (at 78° from the view axis)
    back = v[:, 2] > 0.5 + 0.02
    assert vis[front].all() and not vis[back].any()
    rgb = shade(rasterize(v, f, K, SIZE), v, f, albedo=np.tile([1.0, 0.5, 0.2], (len(v), 1)))
    assert rgb.dtype == np.float32 and rgb.min() >= 0 and rgb.max() <= 1
    img = render_rgb(v, f, K, SIZE, background=(0, 0, 255))
    assert img.dtype == np.uint8 and img.shape == (48, 64, 3)
    assert tuple(img[0, 0]) == (0, 0, 255) and img[24, 32, 0] == img[24, 32, 2] > 100  # grey lit centre, blue bg
    # lit from upper-left: upper-left of the sphere brighter than lower-right
    g = render_rgb(v, f, K, SIZE, light_dir=(-1, -1, -1))[..., 0].astype(int)
    assert g[18, 26] > g[30, 38]


def test_overlays_keep_shape_and_draw():
    v, f = _sphere()
    base = np.zeros((48, 64, 3), np.uint8)
    for out in (overlay_wireframe(base, v, f, K), overlay_mesh(base, v, f, K),
                overlay_points(base, project(v[:5], K))):
        assert out.shape == base.shape and out.dtype == np.uint8 and out.any()
    assert not base.any()


def test_bad_input_raises():
    with pytest.raises(ValueError):
        rasterize(np.zeros((3, 2)), np.array([[0, 1, 2]]), K, SIZE)
    with pytest.raises(ValueError):
        rasterize(np.zeros((3, 3)), np.array([[0, 1, 5]]), K, SIZE)


def test_behind_camera_dropped_empty_mesh():
    v, f = _quad(-0.5)
    assert rasterize(v, f, K, SIZE).mask.sum() == 0
    assert rasterize(v, np.zeros((0, 3), int), K, SIZE).mask.sum() == 0
