"""Third-party characters for the retarget benchmark: where they come from, their sha256, and a checked
fetch step. The files are not in this repository (their licences are the authors'); fetch them yourself:

    python benchmarks/characters.py fetch brunette-t /path/to/brunette-t.glb     # or an https:// URL

copies the file into ``$FLAMECAP_CHARACTERS`` (default ``~/.flamecap/characters``) after checking its sha256.
``python benchmarks/characters.py list`` shows what is there. Benchmarks and tests skip a character that is
absent, saying which file to fetch.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

CHARACTERS = {
    # Ready Player Me avatar (ARKit-52 + Oculus visemes on the head, eyes and teeth; Head/Neck/LeftEye/RightEye
    # skeleton), CC BY-NC 4.0, from met4citizen/TalkingHead
    "brunette-t": {
        "file": "brunette-t.glb", "mesh": "Wolf3D_Head",
        "sha256": "3ca13a1e3ad8f57e50266294b823641680dd3f3f174eb4be908ddca7afc0c82a",
        "url": "https://raw.githubusercontent.com/met4citizen/TalkingHead/971e1a93a0726561d1966c4b21d06a3abddbf198/"
               "avatars/brunette-t.glb",
        "licence": "CC BY-NC 4.0 (Ready Player Me), via github.com/met4citizen/TalkingHead",
    },
    # VRoid Studio avatar converted for TalkingHead (ARKit-named keys on the merged face), meshopt-compressed
    # in the repository: decompress with `npx gltfpack -i vroid.glb -o vroid-plain.glb -noq` (gltfpack 1.3.0)
    # and fetch the result (its sha256 below)
    "vroid": {
        "file": "vroid-plain.glb", "mesh": "Face",
        "sha256": "2844bc90488fce776e8793523ea73a461e83e6c822fb662158daa99a6afec7ef",
        "source_sha256": "8c4226b6d455977ce6dcf5d83b6b7a7354cdad7fab8edc5418b76f880f61558e",
        "url": "https://raw.githubusercontent.com/met4citizen/TalkingHead/971e1a93a0726561d1966c4b21d06a3abddbf198/"
               "avatars/vroid.glb",
        "licence": "VRoid Studio terms (non-commercial example), via github.com/met4citizen/TalkingHead",
    },
}


def characters_dir() -> Path:
    return Path(os.environ.get("FLAMECAP_CHARACTERS") or Path.home() / ".flamecap" / "characters")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def path_of(name: str) -> Path | None:
    """The checked local file of character ``name``, or None when it is absent or does not match."""
    spec = CHARACTERS[name]
    p = characters_dir() / spec["file"]
    if not p.is_file():
        return None
    return p if spec["sha256"] is None or sha256(p) == spec["sha256"] else None


def missing_reason(name: str) -> str:
    spec = CHARACTERS[name]
    return (f"third-party character '{name}' ({spec['file']}) is not in {characters_dir()}; fetch it with "
            f"'python benchmarks/characters.py fetch {name} PATH_OR_URL' (source: {spec['url']})")


def fetch(name: str, source: str) -> Path:
    if name not in CHARACTERS:
        raise SystemExit(f"error: unknown character '{name}'; one of {sorted(CHARACTERS)}")
    spec = CHARACTERS[name]
    dest = characters_dir() / spec["file"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    os.close(fd)
    try:
        if source.startswith(("https://", "http://")):
            with urllib.request.urlopen(source) as r, open(tmp, "wb") as out:  # noqa: S310 - http(s) checked above
                shutil.copyfileobj(r, out)
        else:
            shutil.copyfile(source, tmp)
        got = sha256(Path(tmp))
        want = spec["sha256"]
        if want is not None and got != want:
            raise SystemExit(f"error: {source} has sha256 {got}, expected {want}; it is not the file the benchmark "
                             f"was measured on")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "list":
        for n in CHARACTERS:
            print(f"{n}: {path_of(n) or missing_reason(n)}")
    elif len(sys.argv) == 4 and sys.argv[1] == "fetch":
        print(f"fetched {fetch(sys.argv[2], sys.argv[3])}")
    else:
        raise SystemExit(__doc__)
