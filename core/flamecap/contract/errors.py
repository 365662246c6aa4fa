"""The contract's own error (the contract is vendored into the add-on, so it depends on nothing else)."""
from __future__ import annotations


class ContractError(ValueError):
    """A file does not match the versioned contract: which field, expected vs actual, what to do."""

    exit_code = 6

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
