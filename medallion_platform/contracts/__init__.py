"""Silver contracts: declared types, constraints and keys, applied to bronze in SQL (no Dagster)."""

from medallion_platform.contracts.apply import SilverRunStats, apply_contract
from medallion_platform.contracts.checks import CheckOutcome, run_contract_checks
from medallion_platform.contracts.spec import Column, Contract, Rule

__all__ = [
    "CheckOutcome",
    "Column",
    "Contract",
    "Rule",
    "SilverRunStats",
    "apply_contract",
    "run_contract_checks",
]
