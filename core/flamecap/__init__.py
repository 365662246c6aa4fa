"""FlameCap core: footage → landmarks → FLAME fit → result file. Stays light: heavy dependencies (torch,
cv2, mediapipe) are imported only by the modules that use them."""
__version__ = "0.1.0"
