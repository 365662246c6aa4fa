"""Typed, actionable errors.

Every error a user can trigger is a :class:`FlameCapError` whose message is one line saying what went
wrong, where, and what to do. The CLI prints ``error: <message>`` and exits with ``exit_code``.
"""
from __future__ import annotations


class FlameCapError(Exception):
    """Base class: one-line, actionable message; ``exit_code`` for the CLI."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always a single line


class InputError(FlameCapError):
    """A user-supplied file or argument is missing, unreadable or malformed."""

    exit_code = 2


class ModelError(FlameCapError):
    """A head model (FLAME .pkl/.npz) is missing, unsafe, unknown or inconsistent."""

    exit_code = 3


class UnsafeFileError(ModelError):
    """A file tried to load code or a class that is not on the allow-list."""


class FootageError(InputError):
    """Video or image sequence cannot be read."""


class NoFaceError(FlameCapError):
    """No face was found where one is needed."""

    exit_code = 4


class WeightsError(FlameCapError):
    """Network weights are missing or do not match the expected layout."""

    exit_code = 5


class ContractError(FlameCapError):
    """A result / model file does not match the versioned contract (which field, expected vs actual)."""

    exit_code = 6


class FitError(FlameCapError):
    """The fitter could not produce a result (e.g. no valid frames)."""

    exit_code = 7


class DownloadError(FlameCapError):
    """A download failed (credentials, network, checksum)."""

    exit_code = 8


class BatchError(FlameCapError):
    """Some shots of a batch failed (the others are done; the report says which and why)."""

    exit_code = 10


class CancelledError(FlameCapError):
    """The user cancelled the run."""

    exit_code = 130
