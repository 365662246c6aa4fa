"""Which shots a batch tracks: files, globs, folders and shot lists (CSV / JSON with per-shot options) →
:class:`Shot` rows with their output paths (stdlib only; nothing here touches the footage's frames).

- a video or image file: one shot;
- a glob such as ``takes/*.mov``: each match, as if given by hand;
- a folder: each video file in it (sorted by name), or, when it holds no videos but images, the folder as one
  image-sequence shot;
- ``*.csv`` / ``*.json``: a shot list. CSV: a header row with a ``footage`` column, optionally ``name`` and
  any track option (``model, quality, focal, start, end, stride, fps, face_index, identity, ...``, the names of
  :class:`flamecap.commands.track.TrackOptions`, ``-`` or ``_``); empty cells keep the batch's value. JSON: a
  list of objects with the same keys, or ``{"shots": [...]}``. Relative paths are relative to the list's folder.

Shot names are the file stems (the folder name for an image folder); a repeated name gets ``-2``, ``-3``...
in input order. A shot's result is ``OUTDIR/<name>.npz``.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..commands.track import TrackOptions
from ..errors import InputError
from ..video import IMAGE_EXTS, _natural_key

VIDEO_EXTS = (".mp4", ".mov", ".m4v", ".mpg", ".mpeg", ".avi", ".mkv", ".webm", ".mxf", ".wmv", ".flv",
              ".ts", ".mts", ".m2ts", ".dv", ".ogv", ".3gp")
LIST_EXTS = (".csv", ".json")
PATH_OPTIONS = ("model", "weights", "points", "identity_weights")   # options that may name files
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class Shot:
    """One footage to track: ``footage`` and ``output`` absolute, ``options`` its track options."""

    name: str
    footage: str
    output: str
    options: TrackOptions

    @property
    def sidecar(self) -> str:
        """Where the shot's resume record lives (see :mod:`flamecap.batch.state`)."""
        return str(Path(self.output).with_suffix(".batch.json"))


def shot_output(outdir: str | os.PathLike, name: str) -> str:
    """The result path of shot ``name`` (the one place a batch names its outputs)."""
    return str(Path(outdir).resolve() / f"{name}.npz")


def collect_shots(specs: list[str], outdir: str | os.PathLike, defaults: TrackOptions) -> list[Shot]:
    """Expand ``specs`` (files, globs, folders, shot lists) into shots writing under ``outdir``. Raises
    :class:`InputError` (one line) for a spec that names nothing or a malformed shot list."""
    rows: list[tuple[str | None, str, TrackOptions]] = []   # (explicit name, footage, options)
    for spec in specs:
        rows += _expand(spec, _absolute_paths(defaults, Path.cwd()))
    if not rows:
        raise InputError("no shots given; pass video files, folders, globs or a shot list (.csv/.json)")
    return _named(rows, outdir)


def _expand(spec: str, defaults: TrackOptions) -> list[tuple[str | None, str, TrackOptions]]:
    p = Path(spec)
    if p.suffix.lower() in LIST_EXTS and p.is_file():
        return read_shot_list(p, defaults)
    if glob.has_magic(spec) and not p.exists():
        matches = sorted(glob.glob(spec), key=_natural_key)
        if not matches:
            raise InputError(f"no files match {spec}; check the pattern (quote it so the shell leaves it alone)")
        return [row for m in matches for row in _expand_path(Path(m), defaults)]
    return _expand_path(p, defaults)


def _expand_path(p: Path, defaults: TrackOptions) -> list[tuple[str | None, str, TrackOptions]]:
    if p.is_dir():
        files = sorted((q for q in p.iterdir() if q.is_file()), key=lambda q: _natural_key(q.name))
        videos = [q for q in files if q.suffix.lower() in VIDEO_EXTS]
        if videos:
            return [(None, str(q.resolve()), defaults) for q in videos]
        if any(q.suffix.lower() in IMAGE_EXTS for q in files):
            return [(None, str(p.resolve()), defaults)]
        raise InputError(f"folder {p} holds no video files ({', '.join(VIDEO_EXTS[:6])}, ...) and no images; "
                         f"give the folder with the takes")
    # a file (or an image pattern such as frames/%04d.png): a missing one fails as its own shot, not the batch
    return [(None, str(p.resolve()), defaults)]


def read_shot_list(path: str | os.PathLike, defaults: TrackOptions) -> list[tuple[str | None, str, TrackOptions]]:
    """The rows of a CSV / JSON shot list (module docstring) with their options."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read shot list {path} ({exc}); give a UTF-8 CSV or JSON file") from None
    if path.suffix.lower() == ".json":
        entries = _json_entries(path, text)
    else:
        reader = csv.DictReader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
        if not reader.fieldnames or "footage" not in [f.strip() for f in reader.fieldnames]:
            raise InputError(f"shot list {path} needs a header row with a 'footage' column (and optionally "
                             f"'name' and track options such as quality, focal, start, end, face_index)")
        entries = []
        for i, row in enumerate(reader, start=2):
            if None in row:
                raise InputError(f"{path} line {i}: more cells than header columns")
            entries.append((f"{path} line {i}: ", {k.strip(): v for k, v in row.items()}))
    base = path.parent.resolve()
    out = []
    for where, entry in entries:
        entry = dict(entry)
        footage = entry.pop("footage", None)
        if footage is None or not str(footage).strip():
            raise InputError(f"{where}no footage given; fill the 'footage' column")
        name = entry.pop("name", None)
        name = str(name).strip() if name is not None and str(name).strip() else None
        opts = _absolute_paths(defaults.with_values(entry, where), base)
        fp = Path(str(footage).strip()).expanduser()
        out.append((name, str((base / fp).resolve() if not fp.is_absolute() else fp), opts))
    if not out:
        raise InputError(f"shot list {path} lists no shots")
    return out


def _json_entries(path: Path, text: str) -> list[tuple[str, dict]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"shot list {path} is not valid JSON ({exc}); fix it or use CSV") from None
    if isinstance(data, dict):
        data = data.get("shots")
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise InputError(f"shot list {path} must be a JSON list of objects (or {{\"shots\": [...]}}), each "
                         f"with a 'footage' key")
    return [(f"{path} shot {i + 1}: ", e) for i, e in enumerate(data)]


def _absolute_paths(opts: TrackOptions, base: Path) -> TrackOptions:
    """File options made absolute (workers, and Ray nodes, may run elsewhere); a registered model name stays."""
    changes = {}
    for name in PATH_OPTIONS:
        value = getattr(opts, name)
        if value and not Path(value).is_absolute() and (base / value).exists():
            changes[name] = str((base / value).resolve())
    return replace(opts, **changes) if changes else opts


def _named(rows: list[tuple[str | None, str, TrackOptions]], outdir) -> list[Shot]:
    taken: set[str] = set()
    explicit = [n for n, _, _ in rows if n]
    dup = sorted({n for n in explicit if explicit.count(n) > 1})
    if dup:
        raise InputError(f"shot name(s) {', '.join(dup)} appear more than once in the shot list; names must be "
                         f"unique (each names its result file)")
    for n in explicit:
        if not _NAME_OK.match(n):
            raise InputError(f"shot name '{n}' is not a plain file name; use letters, digits, '.', '_', '-'")
    taken.update(explicit)
    shots = []
    for name, footage, opts in rows:
        if name is None:
            stem = Path(footage).name if Path(footage).is_dir() else Path(footage).stem
            stem = re.sub(r"[^A-Za-z0-9._+-]", "_", stem.replace("%", "")) or "shot"
            name, k = stem, 2
            while name in taken:
                name, k = f"{stem}-{k}", k + 1
            taken.add(name)
        shots.append(Shot(name=name, footage=footage, output=shot_output(outdir, name), options=opts))
    return shots
