"""The declared tables as one dependency graph: bronze -> contracts -> SQL models (no Dagster).

A contract reads its bronze table and writes its silver table, its quarantine and, for a
change log that keeps versions, its history; a SQL model reads the tables its SQL names
(``SqlModel.depends_on``, inferred from the SQL). Tables are ``schema.table`` names, which is
also the asset key (``AssetKey(name.split("."))``). Everything that needs an order (building
models, the declared catalog the syncs are checked against) or a reach (a source's run
refreshes what is built from it) asks this graph, so there is one answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from graphlib import CycleError, TopologicalSorter

from medallion_platform.contracts.spec import Contract
from medallion_platform.gold.spec import SqlModel


class TableGraph:
    """Each declared table with the tables it is built from; order and reach over them."""

    def __init__(self, contracts: Iterable[Contract] = (), models: Iterable[SqlModel] = ()):
        # table -> the tables it reads, in declaration order (dicts keep it: the order of
        # tables that do not depend on each other is the order they were declared in).
        self.inputs: dict[str, tuple[str, ...]] = {}
        self.models: dict[str, SqlModel] = {}
        for contract in contracts:
            bronze = f"bronze.{contract.source}"
            self.inputs.setdefault(bronze, ())
            for table in contract_tables(contract):
                self.inputs[table] = (bronze,)
        for model in models:
            name = f"{model.layer}.{model.name}"
            self.models[name] = model
            self.inputs[name] = tuple(d.lower() for d in model.depends_on)
        for reads in list(self.inputs.values()):
            for table in reads:  # read but not declared here: a source of the graph
                self.inputs.setdefault(table, ())

    def order(self) -> list[str]:
        """Every table after the tables it reads; ``ValueError`` naming a cycle if any."""
        position = {table: i for i, table in enumerate(self.inputs)}
        sorter = TopologicalSorter(self.inputs)
        try:
            sorter.prepare()
        except CycleError as exc:
            loop = list(reversed(exc.args[1][1:]))  # graphlib: [a, ..., a], reader last
            first = loop.index(min(loop))  # told from the same table whatever the walk
            cycle = " -> ".join([*loop[first:], *loop[:first], loop[first]])
            raise ValueError(f"tables read each other in a cycle: {cycle}") from None
        ordered: list[str] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=position.__getitem__)
            ordered += ready
            sorter.done(*ready)
        return ordered

    def models_in_order(self) -> list[SqlModel]:
        """The SQL models, each after the models it reads."""
        return [self.models[table] for table in self.order() if table in self.models]

    def downstream(self, table: str) -> list[str]:
        """``table`` and every table built from it, directly or not, in build order."""
        if table not in self.inputs:
            return [table]  # nothing declared reads it (a stream without a contract, say)
        readers: dict[str, list[str]] = {}
        for reader, reads in self.inputs.items():
            for read in reads:
                readers.setdefault(read, []).append(reader)
        reached = {table}
        frontier = [table]
        while frontier:
            for reader in readers.get(frontier.pop(), []):
                if reader not in reached:
                    reached.add(reader)
                    frontier.append(reader)
        return [t for t in self.order() if t in reached]


def contract_tables(contract: Contract) -> list[str]:
    """What a contract writes: its silver table, its quarantine and its history, if any."""
    tables = [f"silver.{contract.name}", f"quarantine.{contract.name}"]
    if contract.changes is not None and contract.changes.history:
        tables.append(f"silver.{contract.changes.history}")
    return tables
