"""The shared contract (``flamecap.contract``, numpy + stdlib), vendored or from the source checkout."""
from ._vendor import load_contract, load_contract_module

contract = load_contract()

__all__ = ["contract", "load_contract_module"]
