"""Software rendering (numpy, no OpenGL): rasterization, shading, visibility and overlays.
See :mod:`flamecap.render.raster` for conventions."""
from .raster import (Fragments, overlay_mesh, overlay_points, overlay_wireframe, project, rasterize,
                     render_rgb, shade, vertex_normals, vertex_visibility)

__all__ = ["Fragments", "rasterize", "shade", "render_rgb", "vertex_visibility", "vertex_normals", "project",
           "overlay_wireframe", "overlay_mesh", "overlay_points"]
