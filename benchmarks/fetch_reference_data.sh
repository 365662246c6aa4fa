#!/bin/sh
# One-time set-up of the independent 68-point reference for `flamecap bench --references grid`:
# dlib's Python wheels from PyPI and dlib's 68-point shape predictor from Debian's libdlib-data package,
# kept outside the repository (REFDATA, default: refdata/ next to the repository, or $FLAMECAP_REFDATA).
# The bench checks the model file's sha256 (flamecap.reference.dlib68.MODEL_SHA256).
set -e
REFDATA="${FLAMECAP_REFDATA:-$(cd "$(dirname "$0")/../.." && pwd)/refdata}"
PY="${PYTHON:-python}"
"$PY" -m pip install dlib-bin
mkdir -p "$REFDATA"
cd "$REFDATA"
apt-get download libdlib-data
dpkg -x libdlib-data_*.deb deb
cp deb/usr/share/dlib/shape_predictor_68_face_landmarks.dat .
sha256sum shape_predictor_68_face_landmarks.dat
echo "reference data in $REFDATA"
