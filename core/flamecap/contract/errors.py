"""The contract's own error (the contract is vendored into the add-on, so it depends on nothing else)."""
from __future__ import annotations


class ContractError(ValueError):
    """A file does not match the versioned contract: which field, expected vs actual, what to do."""

    exit_code = 6

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class OutputPathError(ContractError, OSError):
    """An output file cannot be written where asked (the path is a folder, a parent is a file, the folder is
    not writable, the disk is full). Nothing is written and an existing file there is left untouched."""

    exit_code = 2
