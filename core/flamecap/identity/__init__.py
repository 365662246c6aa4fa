"""Metrical identity from face images: MICA (Zielonka, Bolkart, Thies, ECCV 2022).

ArcFace IResNet-100 → 512-d L2-normalised identity embedding → mapping network → 300 FLAME 2020 shape
coefficients (metres, zero expression and pose). Optional: weights are user-supplied (non-commercial) and
only needed for ``flamecap track --identity mica`` / ``flamecap identity``. Modules:

- :mod:`.arcface` IResNet encoder (insightface layout), :mod:`.mica` the full net, inference and the
  footage-level estimator used by the fitter, :mod:`.preprocess` 5-point alignment to the ArcFace template,
  :mod:`.checkpoint` safe loading of ``mica.tar`` / insightface ``backbone.pth``, :mod:`.train` training
  of the mapping network on (image, FLAME shape) pairs.

This package imports nothing heavy at import time; torch / cv2 / mediapipe load in the submodules.
"""
