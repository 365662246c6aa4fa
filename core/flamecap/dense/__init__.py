"""FlowFace-style dense alignment network (every head vertex in 2D + σ) and its synthetic-data training.

Modules: :mod:`.segformer` (Mix Transformer encoder), :mod:`.uv_branch` (learned UV textures),
:mod:`.raft` (correlation pyramid + ConvGRU update), :mod:`.model` (network, Laplace NLL sequence loss),
:mod:`.data` (seeded synthetic render stream), :mod:`.train` (train / evaluate / export),
:mod:`.checkpoint` (safetensors I/O). The inference backend is
:class:`flamecap.landmarks.dense_aligner.DenseAligner`. Importing this package imports nothing heavy;
the submodules need torch. See README.md here for how to train the real network.
"""
