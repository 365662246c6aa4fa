"""FLAME model layer: loaders (.pkl/.npz), registry, differentiable torch layer, synthetic generator.
Import submodules directly (``flamecap.flame.layer`` needs torch)."""
