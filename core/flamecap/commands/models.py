"""``flamecap models add|list|verify|remove|download``: the user's FLAME models.

``download`` logs in to the FLAME website (an HTTP POST of the account's username and password, urllib
only), resumes an interrupted download from its ``.part`` file with a ``Range`` header, checks the sha256
where it is published, then converts and registers the ``.pkl`` files in the archive."""
from __future__ import annotations

import argparse
import getpass
import http.client
import json
import logging
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import paths
from ..errors import DownloadError, InputError, ModelError
from ..cli import progress_reporter

log = logging.getLogger(__name__)

DEFAULT_URL_BASE = "https://download.is.tue.mpg.de/download.php"
FLAME_SIGNUP = "https://flame.is.tue.mpg.de"


@dataclass(frozen=True)
class DownloadSpec:
    release: str
    archive: str                 # sfile= on the download server
    members: tuple[str, ...]     # the .pkl files expected inside


DOWNLOADS = {
    "flame2023-open": DownloadSpec("flame2023-open", "FLAME2023Open.zip", ("flame2023_Open.pkl",)),
    "flame2020": DownloadSpec("flame2020", "FLAME2020.zip", ("generic_model.pkl", "female_model.pkl",
                                                            "male_model.pkl")),
    "flame2023": DownloadSpec("flame2023", "FLAME2023.zip", ("flame2023.pkl", "flame2023_no_jaw.pkl")),
}


def register(sub: argparse._SubParsersAction) -> None:
    from ..cli import add_progress_argument
    p = sub.add_parser("models", help="add, list, verify and download FLAME head models; fetch the MediaPipe face models")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True

    a = msub.add_parser("add", help="convert and register a FLAME .pkl (or a converted .npz / release .zip)")
    a.add_argument("file", help="flame2023_Open.pkl, generic_model.pkl, flame2023.pkl, a .npz or a release .zip")
    a.add_argument("--name", help="registry name (default: from the release, e.g. flame2023-open)")
    a.add_argument("--default", action="store_true", help="make it the default model")
    a.add_argument("--n-shape", type=int, help="keep only this many identity components (≤ 300)")
    a.add_argument("--n-expr", type=int, help="keep only this many expression components (≤ 100)")
    a.add_argument("--embedding", action="append", default=[], metavar="FILE",
                   help="a landmark embedding of the download to keep with the model (repeatable): "
                        "mediapipe_landmark_embedding.npz (makes the MediaPipe binding official where it can) "
                        "or the 68-point flame_static_embedding.pkl")
    a.set_defaults(handler=cmd_add)

    ls = msub.add_parser("list", help="registered models")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_list)

    v = msub.add_parser("verify", help="re-hash and re-validate registered models")
    v.add_argument("name", nargs="?", help="one model (default: all)")
    v.set_defaults(handler=cmd_verify)

    r = msub.add_parser("remove", help="unregister a model and delete its converted .npz")
    r.add_argument("name")
    r.set_defaults(handler=cmd_remove)

    dl = msub.add_parser("download", help="download a FLAME release with your FLAME website account")
    dl.add_argument("release", choices=sorted(DOWNLOADS), help="which release")
    dl.add_argument("--username", help="FLAME website account (e-mail); asked for when missing")
    dl.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    dl.add_argument("--url-base", default=DEFAULT_URL_BASE, metavar="URL",
                    help="download endpoint (default: the FLAME website; for mirrors and tests)")
    dl.add_argument("--default", action="store_true", help="make the downloaded model the default")
    dl.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    add_progress_argument(dl)
    dl.set_defaults(handler=cmd_download)

    mp = msub.add_parser("fetch-mediapipe", help="take MediaPipe's face models (Apache-2.0) out of the mediapipe "
                                                 "0.10.21 wheel on PyPI for the 'litert' aligner")
    mp.add_argument("--wheel", type=Path, metavar="FILE",
                    help="a mediapipe-0.10.21-*.whl you already have (default: pip downloads it, no dependencies)")
    mp.add_argument("--from-installed", action="store_true",
                    help="copy them from the installed legacy mediapipe 0.10.21 package instead (no network)")
    mp.add_argument("--dest", type=Path, metavar="DIR",
                    help="where to put the files (default: $FLAMECAP_HOME/weights/mediapipe)")
    mp.add_argument("--force", action="store_true", help="extract again even when intact files are there")
    mp.set_defaults(handler=cmd_fetch_mediapipe)


# ----------------------------------------------------------------------------------------------------------
def cmd_fetch_mediapipe(args) -> int:
    from ..landmarks import mp_models
    dest = args.dest or mp_models.models_dir()
    if args.wheel is not None and args.from_installed:
        raise InputError("--wheel and --from-installed are two sources; give one of them")
    written = mp_models.fetch(dest, wheel=args.wheel, force=args.force, from_installed=args.from_installed)
    if not written:
        print(f"MediaPipe face files already in place and intact: {dest}")
    for p in written:
        print(f"wrote {p}")
    if written:
        print(f"MediaPipe face models (Apache-2.0, Google LLC; licence: {dest / mp_models.LICENCE_FILE}) "
              f"-> use them with '--aligner litert'")
    return 0


def cmd_add(args) -> int:
    from ..flame.io import add_model_file
    outcomes = add_model_file(args.file, name=args.name, make_default=args.default, n_shape=args.n_shape,
                              n_expr=args.n_expr, embeddings=args.embedding)
    for o in outcomes:
        e = o.entry
        if o.already:
            print(f"already registered: {e.name} ({e.release}) from {e.source_name}")
        else:
            print(f"added {e.name}: {e.release}, {e.n_vertices} vertices, {e.n_shape} shape / {e.n_expr} "
                  f"expression components{', eyelids' if e.has_eyelids else ''}"
                  f"{' (default)' if e.default else ''} -> {e.path()}")
    return 0


def cmd_list(args) -> int:
    from ..flame.registry import registered_models_summary
    rows = registered_models_summary()
    if len(rows) == 1 and set(rows[0]) == {"error"}:
        raise ModelError(rows[0]["error"])     # an unreadable registry is an error, not an empty list
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        from ..flame.io import NO_MODEL_MESSAGE
        print(NO_MODEL_MESSAGE)
        return 0
    for r in rows:
        if "error" in r:
            print(f"  {r['name']:24s} {r['release']:20s} [refused: {r['error']}]")
            continue
        flag = "*" if r["default"] else " "
        missing = "" if r["present"] else "  [file missing]"
        print(f"{flag} {r['name']:24s} {r['release']:20s} V={r['n_vertices']:<6d} shape={r['n_shape']:<4d} "
              f"expr={r['n_expr']:<4d}{' eyelids' if r['has_eyelids'] else ''}{missing}")
    return 0


def verify_entry(entry) -> str | None:
    """Re-hash and re-validate one registered model; ``None`` when fine, else the problem in one line."""
    from ..contract.errors import ContractError
    from ..contract.model_format import load_model_npz
    from ..flame.registry import sha256_file
    try:
        path = entry.path()
    except ModelError as exc:
        return str(exc)
    if not path.is_file():
        return f"file {path} is missing"
    if sha256_file(path) != entry.npz_sha256:
        return f"file {path} changed since it was registered (sha256 differs)"
    try:
        model = load_model_npz(path)
    except ContractError as exc:
        return str(exc)
    if model.topology != entry.topology_hash:
        return f"topology hash {model.topology} differs from the registered {entry.topology_hash}"
    if (model.n_vertices, model.n_shape, model.n_expr) != (entry.n_vertices, entry.n_shape, entry.n_expr):
        return "array sizes differ from the registry"
    return None


def cmd_verify(args) -> int:
    from ..flame.registry import Registry
    reg = Registry.load()
    if args.name:
        entry = reg.get(args.name)
        if entry is None:
            raise ModelError(f"no registered model named '{args.name}'; registered: "
                             f"{', '.join(reg.names()) or 'none'}")
        entries = [entry]
    else:
        entries = reg.entries
        if not entries:
            from ..flame.io import NO_MODEL_MESSAGE
            raise ModelError(NO_MODEL_MESSAGE)
    bad = []
    for e in entries:
        problem = verify_entry(e)
        print(f"{'ok' if problem is None else 'FAILED'}: {e.name} ({e.release})"
              f"{'' if problem is None else ': ' + problem}")
        if problem is not None:
            bad.append(e.name)
    if bad:
        raise ModelError(f"{len(bad)} model(s) failed verification ({', '.join(bad)}); remove them with "
                         f"'flamecap models remove NAME' and add them again")
    return 0


def cmd_remove(args) -> int:
    from ..flame.registry import Registry
    with Registry.locked() as reg:
        entry = reg.remove(args.name)
        try:
            path = entry.path()
        except ModelError as exc:   # an entry naming a file outside the models folder: drop it, delete nothing
            path = None
            log.warning("%s; no file was deleted", exc)
        reg.save()
        if path is not None:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
    print(f"removed {entry.name}" + ("" if path is not None else " (registry entry only; no file deleted)"))
    return 0


# ----------------------------------------------------------------------------------------------------------
ProgressFn = Callable[[str, float, str], None]


def _credentials_error() -> DownloadError:
    return DownloadError(f"the FLAME website did not accept the username/password (it answered with a login "
                         f"page instead of the archive); check them by logging in at {FLAME_SIGNUP} "
                         f"(register there for free if you have no account)")


def download_url(url_base: str, archive: str) -> str:
    parsed = urllib.parse.urlparse(url_base)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InputError(f"--url-base must be an http(s) URL, got '{url_base}'")
    if parsed.scheme == "http" and parsed.hostname not in ("localhost", "127.0.0.1", "::1"):
        # the login form carries the account's password: over plain http anyone on the way can read it
        raise InputError(f"--url-base {url_base} is plain http: the FLAME password would be sent unencrypted; "
                         f"use an https:// URL (plain http is accepted only for this machine, localhost)")
    query = urllib.parse.urlencode({"domain": "flame", "sfile": archive, "resume": 1})
    return f"{url_base}?{query}"


def download_archive(url: str, form: dict[str, str], part: Path, progress: ProgressFn | None = None,
                     timeout: float = 60.0, attempts: int = 3, chunk: int = 1 << 16) -> Path:
    """POST ``form`` to ``url`` and stream the answer into ``part``, resuming from its size with a ``Range``
    header (and retrying up to ``attempts`` times when the connection drops). Returns ``part`` complete.

    A login page / 401 / 403 instead of a zip raises :class:`DownloadError` and leaves ``part`` as it was."""
    part.parent.mkdir(parents=True, exist_ok=True)
    body = urllib.parse.urlencode(form).encode()
    last_error = ""
    for attempt in range(1, attempts + 1):
        have = part.stat().st_size if part.is_file() else 0
        headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "flamecap",
                   "Accept": "application/zip, application/octet-stream"}
        if have:
            headers["Range"] = f"bytes={have}-"
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - http(s) checked by caller
        try:
            resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - http(s) checked by caller
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise _credentials_error() from None
            if exc.code == 416 and have:  # nothing left to send: the part file is complete
                return part
            raise DownloadError(f"the download server answered HTTP {exc.code} ({exc.reason}) for {url}; "
                                f"try again later") from None
        except (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException) as exc:
            last_error = str(getattr(exc, "reason", exc))
            log.warning("download attempt %d failed: %s", attempt, last_error)
            time.sleep(min(0.2 * attempt, 1.0))
            continue
        with resp:
            status = resp.status
            ctype = (resp.headers.get("Content-Type") or "").lower()
            first = resp.read(4)
            if "text/html" in ctype or (status == 200 and first and first != b"PK\x03\x04"):
                raise _credentials_error()
            if status == 206:
                crange = resp.headers.get("Content-Range", "")
                start = _range_start(crange)
                if start != have:
                    raise DownloadError(f"the server resumed at byte {start}, not {have}; delete {part} "
                                        f"and run the command again")
                mode, done = "ab", have
            elif status == 200:
                mode, done = "wb", 0
            else:
                raise DownloadError(f"the download server answered HTTP {status} for {url}; try again later")
            total = _total_size(resp.headers, status, done)
            try:
                with open(part, mode) as fh:
                    fh.write(first)
                    done += len(first)
                    last_report = 0.0
                    while True:
                        block = resp.read(chunk)
                        if not block:
                            break
                        fh.write(block)
                        done += len(block)
                        if progress and total and time.monotonic() - last_report > 0.5:
                            last_report = time.monotonic()
                            progress("load", done / total, f"downloading {part.name[:-5]}: "
                                                           f"{done / 1e6:.1f} / {total / 1e6:.1f} MB")
            except (http.client.IncompleteRead, ConnectionError, socket.timeout, OSError) as exc:
                last_error = f"connection dropped after {done} bytes ({type(exc).__name__})"
                log.warning("download attempt %d: %s; resuming", attempt, last_error)
                continue
            if total is not None and done < total:
                last_error = f"connection dropped after {done} of {total} bytes"
                log.warning("download attempt %d: %s; resuming", attempt, last_error)
                continue
            return part
    raise DownloadError(f"download failed after {attempts} attempts ({last_error}); run the same command "
                        f"again to resume from {part}")


def _range_start(content_range: str) -> int | None:
    try:  # "bytes 100-999/1000"
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _total_size(headers, status: int, offset: int) -> int | None:
    if status == 206:
        cr = headers.get("Content-Range", "")
        try:
            return int(cr.rsplit("/", 1)[1])
        except (IndexError, ValueError):
            pass
    length = headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def check_archive(zip_path: Path, spec: DownloadSpec) -> list[str]:
    """Open the downloaded zip, find the expected ``.pkl`` members and check the published sha256 where one
    exists. Returns the members found. Raises :class:`DownloadError`."""
    import hashlib
    from ..flame.registry import KNOWN_RELEASES
    known = {r.file_name: r.sha256 for r in KNOWN_RELEASES if r.sha256}
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError):
        with open(zip_path, "rb") as fh:
            head = fh.read(64).lstrip().lower()
        zip_path.unlink(missing_ok=True)
        if head.startswith(b"<"):
            raise _credentials_error() from None
        raise DownloadError(f"the downloaded {spec.archive} is not a zip archive (damaged download); run the "
                            f"command again") from None
    with zf:
        by_base = {Path(m.filename).name: m for m in zf.infolist() if not m.is_dir()}
        found = [m for m in spec.members if m in by_base]
        if not found:
            raise DownloadError(f"{spec.archive} holds none of {', '.join(spec.members)}; the FLAME website "
                                f"may have changed its archives — unzip it and use 'flamecap models add'")
        for member in found:
            want = known.get(member)
            if not want:
                continue
            h = hashlib.sha256()
            try:
                with zf.open(by_base[member]) as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        h.update(block)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                zip_path.unlink(missing_ok=True)
                raise DownloadError(f"{spec.archive} is damaged ({exc}); run the command again") from None
            if h.hexdigest() != want:
                zip_path.unlink(missing_ok=True)
                raise DownloadError(f"{member} has sha256 {h.hexdigest()[:16]}…, expected {want[:16]}… "
                                    f"(published for {spec.release}); the download is corrupt or the file "
                                    f"changed — if you trust it, add it with 'flamecap models add'")
    return found


def _read_credentials(args) -> tuple[str, str]:
    username = args.username or os.environ.get("FLAMECAP_FLAME_USERNAME") or ""
    if not username:
        if not sys.stdin or not sys.stdin.isatty():
            raise InputError("no FLAME website username: pass --username (the e-mail of your account at "
                             f"{FLAME_SIGNUP})")
        print("FLAME website username (e-mail): ", end="", file=sys.stderr, flush=True)
        username = sys.stdin.readline().strip()
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass(f"FLAME website password for {username}: ")
        except (EOFError, OSError):
            password = ""
    if not username or not password:
        raise InputError(f"the FLAME website username and password are needed (free account at {FLAME_SIGNUP}); "
                         "use --username and --password-stdin")
    return username, password


def cmd_download(args) -> int:
    from ..flame.io import add_model_file
    spec = DOWNLOADS[args.release]
    url = download_url(args.url_base, spec.archive)
    username, password = _read_credentials(args)
    progress = progress_reporter(args.progress)[1]
    jsonl = args.progress == "jsonl"
    if jsonl:
        from ..contract.events import encode_event
        print(encode_event("start", command="models download", release=spec.release), flush=True)
    part = paths.cache_dir("downloads") / f"{spec.archive}.part"
    download_archive(url, {"username": username, "password": password}, part, progress=progress,
                     timeout=args.timeout)
    check_archive(part, spec)
    outcomes = add_model_file(part, make_default=args.default)
    part.unlink(missing_ok=True)
    for o in outcomes:
        e = o.entry
        msg = (f"already registered: {e.name}" if o.already else
               f"added {e.name}: {e.release}, {e.n_shape} shape / {e.n_expr} expression components"
               f"{' (default)' if e.default else ''}")
        if jsonl:
            from ..contract.events import encode_event
            print(encode_event("log", level="info", message=msg), flush=True)
        elif args.progress == "text":
            print(msg)
    if jsonl:
        from ..contract.events import encode_event
        print(encode_event("done", result=str(outcomes[0].entry.path())), flush=True)
    return 0
