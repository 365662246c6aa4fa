"""Benchmarks against independent references: dlib's 68 points on real footage (:mod:`.grid`) and Blender
renders with known parameters (:mod:`.renders`). Metrics in :mod:`.metrics68` (numpy only)."""
