"""Lineage of one asset through the platform: where it comes from (back to the source
systems), what reads it, and, for a SQL model, where each of its columns comes from.

Everything here works on a loaded ``Definitions`` and plain data, so it is testable without
the command line; ``medallion lineage`` only loads the definitions, calls
:func:`build_report` and prints :func:`format_report` (or ``report.to_dict()`` as JSON).
"""

from __future__ import annotations

import difflib
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetKey, Definitions
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetNode

from medallion_platform.gold.spec import SqlModel
from medallion_platform.lineage.columns import ColumnRef, Schemas, model_column_lineage

IMPLICIT_JOB_PREFIX = "__"  # Dagster's own asset job (__ASSET_JOB) is not a platform job


class UnknownAssetError(LookupError):
    """The asset key is not in the definitions; the message suggests close matches."""


# ---------------------------------------------------------------------------------- keys


def key_string(key: AssetKey) -> str:
    return key.to_user_string()


def parse_asset_key(text: str) -> AssetKey:
    """``gold/customer_360`` (or ``gold.customer_360``) -> ``AssetKey(["gold",
    "customer_360"])``."""
    text = text.strip().strip("/")
    parts = text.split("/") if "/" in text else text.split(".")
    return AssetKey([p for p in parts if p])


def resolve_asset_key(graph: AssetGraph, text: str) -> AssetKey:
    key = parse_asset_key(text)
    if graph.has(key):
        return key
    known = sorted(key_string(k) for k in graph.get_all_asset_keys())
    close = difflib.get_close_matches(key_string(key), known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known assets: {', '.join(known)}"
    raise UnknownAssetError(f"no asset {key_string(key)}{hint}")


# -------------------------------------------------------------------------- source systems


def _meta(node: BaseAssetNode, name: str) -> str | None:
    value = node.metadata.get(name)
    value = getattr(value, "value", value)
    return None if value is None else str(value)


def source_system(node: BaseAssetNode) -> str:
    """How a root of the graph reaches the platform, from its kinds, tags and metadata:
    ``files: landing zone products/*.csv``, ``REST: GET /v1/charges ($PAYMENTS_API_BASE_URL)``,
    ``kafka: topic clickstream``, ``postgres CDC: app_db public.customers``."""
    kinds = set(node.kinds)
    source_tag = node.tags.get("source")
    if "postgres" in kinds or source_tag == "cdc":
        database = _meta(node, "source")
        table = _meta(node, "source_table")
        return "postgres CDC: " + " ".join(p for p in (database, table) if p)
    broker = _meta(node, "broker") or next((k for k in ("kafka", "redis") if k in kinds), None)
    if broker or source_tag == "stream":
        topic = _meta(node, "topic")
        return f"{broker or 'stream'}: topic {topic}" if topic else f"{broker or 'stream'}"
    if "file" in kinds or node.group_name == "landing" or source_tag == "files":
        folder, glob = _meta(node, "landing_folder"), _meta(node, "glob")
        where = f" {folder}/{glob}" if folder and glob else ""
        formats = [k for k in sorted(kinds - {"file", "duckdb"}) if not where.endswith(f".{k}")]
        return f"files: landing zone{where}" + (f" ({', '.join(formats)})" if formats else "")
    if "rest" in kinds or node.group_name == "api" or source_tag == "rest":
        path, env = _meta(node, "path"), _meta(node, "base_url_env")
        return "REST: " + " ".join(
            p for p in (f"GET {path}" if path else None, f"(${env})" if env else None) if p
        )
    described = ", ".join(sorted(kinds)) or "no kinds"
    return f"{node.group_name or 'ungrouped'}: {described}"


# ---------------------------------------------------------------------------------- trees


@dataclass(frozen=True)
class TreeNode:
    """One asset (or column) in a printed tree. ``see_above``: its subtree was printed
    earlier in the same tree; ``label``: the source system of a root, or a note."""

    name: str
    label: str | None = None
    notes: tuple[str, ...] = ()
    children: tuple[TreeNode, ...] = ()
    see_above: bool = False

    def to_dict(self, children_key: str = "children") -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.label:
            out["label"] = self.label
        if self.notes:
            out["notes"] = list(self.notes)
        if self.see_above:
            out["see_above"] = True
        out[children_key] = [c.to_dict(children_key) for c in self.children]
        return out

    def walk(self) -> Iterable[TreeNode]:
        yield self
        for child in self.children:
            yield from child.walk()


def _tree(
    key: AssetKey,
    next_keys: Callable[[AssetKey], Iterable[AssetKey]],
    describe: Callable[[AssetKey, bool], tuple[str | None, tuple[str, ...]]],
    expanded: set[AssetKey],
) -> TreeNode:
    if key in expanded:
        return TreeNode(key_string(key), see_above=True)
    expanded.add(key)
    children = sorted(next_keys(key), key=key_string)
    label, notes = describe(key, not children)
    return TreeNode(
        key_string(key),
        label,
        notes,
        tuple(_tree(k, next_keys, describe, expanded) for k in children),
    )


def upstream_tree(graph: AssetGraph, key: AssetKey) -> TreeNode:
    """The asset, its parents, theirs… down to the roots, each root labelled with its
    source system. An asset reached twice is expanded once, then marked ``see_above``."""

    def describe(k: AssetKey, is_root: bool) -> tuple[str | None, tuple[str, ...]]:
        return (source_system(graph.get(k)) if is_root else None), ()

    return _tree(key, lambda k: graph.get(k).parent_keys, describe, set())


def check_names(graph: AssetGraph, key: AssetKey) -> list[str]:
    return sorted(c.name for c in graph.get(key).check_keys)


def downstream_tree(graph: AssetGraph, key: AssetKey) -> TreeNode:
    """The asset and everything built from it, each with its asset checks."""

    def describe(k: AssetKey, _leaf: bool) -> tuple[str | None, tuple[str, ...]]:
        names = check_names(graph, k)
        return None, (f"checks: {', '.join(names)}",) if names else ()

    return _tree(key, lambda k: graph.get(k).child_keys, describe, set())


def roots(tree: TreeNode) -> list[TreeNode]:
    """The leaves of an upstream tree (the source systems), each once, in tree order."""
    seen: dict[str, TreeNode] = {}
    for node in tree.walk():
        if not node.children and not node.see_above:
            seen.setdefault(node.name, node)
    return list(seen.values())


def format_tree(tree: TreeNode, arrow: str = "") -> list[str]:
    """Indented lines, ``├──``/``└──`` connectors, ``(see above)`` for repeated nodes."""

    def line(node: TreeNode) -> str:
        text = node.name
        if node.label:
            text += f"  [{node.label}]"
        for note in node.notes:
            text += f"  ({note})"
        if node.see_above:
            text += "  (see above)"
        return text

    lines = [line(tree)]

    def add(children: tuple[TreeNode, ...], prefix: str) -> None:
        for i, child in enumerate(children):
            last = i == len(children) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{arrow}{line(child)}")
            add(child.children, prefix + ("    " if last else "│   "))

    add(tree.children, "")
    return lines


# ------------------------------------------------------------------------------ consumers


@dataclass(frozen=True)
class Consumers:
    """What reads or runs the asset besides the assets downstream of it."""

    checks: list[str]  # "<asset>:<check>", on the asset or reading it as an extra input
    jobs: list[str]
    launched_by: list[str]  # "schedule <name> (<cron>) -> <job>", "sensor <name> -> <job>"

    def to_dict(self) -> dict[str, Any]:
        return {"checks": self.checks, "jobs": self.jobs, "launched_by": self.launched_by}


def consumers(defs: Definitions, graph: AssetGraph, key: AssetKey) -> Consumers:
    checks = [f"{key_string(key)}:{name}" for name in check_names(graph, key)]
    checks += sorted(
        f"{key_string(c.key.asset_key)}:{c.key.name}"
        for c in graph.asset_check_nodes
        if c.key.asset_key != key and key in c.parent_entity_keys
    )
    jobs = sorted(
        job.name
        for job in defs.resolve_all_job_defs()
        if not job.name.startswith(IMPLICIT_JOB_PREFIX)
        and key in job.asset_layer.selected_asset_keys
    )
    launched = [
        f"schedule {s.name} ({s.cron_schedule}) -> {s.job_name}"
        for s in defs.schedules or []
        if getattr(s, "job_name", None) in jobs
    ]
    for sensor in defs.sensors or []:
        for target in getattr(sensor, "targets", []):
            if target.job_name in jobs:
                launched.append(f"sensor {sensor.name} -> {target.job_name}")
    return Consumers(checks=checks, jobs=jobs, launched_by=sorted(launched))


# -------------------------------------------------------------------------------- columns


SchemaReader = Callable[[SqlModel], Schemas]
"""The columns of the tables a model reads (e.g. from the warehouse)."""


def _ref_name(ref: ColumnRef) -> str:
    return f"{ref.table.replace('.', '/')}.{ref.column}"


def column_trees(
    models: Iterable[SqlModel], key: AssetKey, read_schemas: SchemaReader
) -> list[TreeNode]:
    """One tree per output column of the SQL model ``key``: the columns it is computed
    from, through every SQL model on the way, to columns of tables that are not SQL models
    (silver contract tables). A column with no source column (``count(*)``, a constant) has
    no children and says so."""
    by_table = {f"{m.layer}.{m.name}": m for m in models}
    table = ".".join(key.path)
    if table not in by_table:
        raise ValueError(f"{key_string(key)} is not a SQL model: it has no column lineage")
    cache: dict[str, dict[str, frozenset[ColumnRef]]] = {}

    def lineage_of(name: str) -> dict[str, frozenset[ColumnRef]]:
        if name not in cache:
            model = by_table[name]
            cache[name] = model_column_lineage(model, read_schemas(model))
        return cache[name]

    def trace(ref: ColumnRef, expanded: set[ColumnRef], name: str | None = None) -> TreeNode:
        name = name or _ref_name(ref)
        if ref.table not in by_table:
            return TreeNode(name)
        if ref in expanded:
            return TreeNode(name, see_above=True)
        expanded.add(ref)
        sources = lineage_of(ref.table).get(ref.column)
        if sources is None:
            raise ValueError(f"{ref} is not an output column of {ref.table}")
        notes = () if sources else ("no source column: count(*) or a constant",)
        children = tuple(trace(s, expanded) for s in sorted(sources))
        return TreeNode(name, notes=notes, children=children)

    # Each column's tree is its own: a chain shared by two columns is printed under both.
    return [trace(ColumnRef(table, column), set(), column) for column in lineage_of(table)]


def column_origins(tree: TreeNode) -> list[str]:
    """The columns at the end of a column's chains (outside SQL models), sorted."""
    return sorted({n.name for n in tree.walk() if not n.children and not n.see_above} - {tree.name})


def table_origin(graph: AssetGraph, key: AssetKey) -> str:
    """``silver/events <- bronze/events [kafka: topic clickstream]``: the chain of single
    parents from a table back to its root."""
    chain, node = [key_string(key)], graph.get(key)
    while len(node.parent_keys) == 1:
        node = graph.get(next(iter(node.parent_keys)))
        chain.append(key_string(node.key))
    if node.parent_keys:
        chain.append("{" + ", ".join(sorted(key_string(k) for k in node.parent_keys)) + "}")
    elif len(chain) > 1:
        chain[-1] += f" [{source_system(node)}]"
    return " <- ".join(chain)


# --------------------------------------------------------------------------------- report


@dataclass
class LineageReport:
    asset: str
    group: str | None
    kinds: list[str]
    description: str | None
    upstream: TreeNode | None = None
    downstream: TreeNode | None = None
    consumers: Consumers | None = None
    columns: list[TreeNode] | None = None
    column_tables: list[str] = field(default_factory=list)  # where the column chains end

    @property
    def sources(self) -> list[TreeNode]:
        return roots(self.upstream) if self.upstream else []

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "asset": self.asset,
            "group": self.group,
            "kinds": self.kinds,
            "description": self.description,
        }
        if self.upstream is not None:
            out["upstream"] = self.upstream.to_dict("upstream")
            out["sources"] = [{"asset": n.name, "system": n.label} for n in self.sources]
        if self.downstream is not None:
            out["downstream"] = self.downstream.to_dict("downstream")
        if self.consumers is not None:
            out |= self.consumers.to_dict()
        if self.columns is not None:
            out["columns"] = [
                {
                    "column": c.name,
                    "origins": column_origins(c),
                    "lineage": c.to_dict("sources"),
                }
                for c in self.columns
            ]
            out["column_tables"] = self.column_tables
        return out


def build_report(
    defs: Definitions,
    asset: str | AssetKey,
    *,
    upstream: bool = True,
    downstream: bool = True,
    models: Iterable[SqlModel] | None = None,
    read_schemas: SchemaReader | None = None,
) -> LineageReport:
    """The lineage of ``asset``; column lineage too when ``models`` and ``read_schemas`` are
    given (errors from reading schemas, e.g. a table not materialized yet, propagate)."""
    graph = defs.resolve_asset_graph()
    key = asset if isinstance(asset, AssetKey) else resolve_asset_key(graph, asset)
    node = graph.get(key)
    report = LineageReport(
        asset=key_string(key),
        group=node.group_name,
        kinds=sorted(node.kinds),
        description=(node.description or "").strip().split("\n\n")[0] or None,
    )
    if upstream:
        report.upstream = upstream_tree(graph, key)
    if downstream:
        report.downstream = downstream_tree(graph, key)
        report.consumers = consumers(defs, graph, key)
    if models is not None and read_schemas is not None:
        report.columns = column_trees(models, key, read_schemas)
        ends = {
            n.name.rsplit(".", 1)[0]
            for tree in report.columns
            for n in tree.walk()
            if not n.children and not n.see_above and n is not tree
        }
        report.column_tables = [table_origin(graph, parse_asset_key(t)) for t in sorted(ends)]
    return report


def format_report(report: LineageReport) -> str:
    head = f"{report.asset}  [{report.group}; {', '.join(report.kinds)}]"
    lines = [head]
    if report.description:
        lines += textwrap.wrap(report.description, 96, initial_indent="  ", subsequent_indent="  ")
    if report.upstream is not None:
        sources = report.sources
        lines += ["", f"Upstream, back to the source systems ({len(sources)}):"]
        lines += ["  " + line for line in format_tree(report.upstream)]
        lines += ["", "Source systems:"]
        width = max(len(s.name) for s in sources)
        lines += [f"  {s.name:<{width}}  {s.label}" for s in sources]
    if report.downstream is not None:
        built = sum(1 for _ in report.downstream.walk()) - 1
        lines += ["", f"Downstream ({built} built from it, each with its checks):"]
        if report.downstream.children or report.downstream.notes:
            lines += ["  " + line for line in format_tree(report.downstream)]
        if not report.downstream.children:
            lines.append("  (no asset reads it)")
    if report.consumers is not None:
        c = report.consumers
        lines += ["", "Asset checks on it or reading it:"]
        lines += [f"  {name}" for name in c.checks] or ["  (none)"]
        lines += ["", "Jobs that include it:", f"  {', '.join(c.jobs) or '(none)'}"]
        if c.launched_by:
            lines += [
                "Schedules and sensors launching those jobs (a sensor may select part of one):"
            ]
            lines += [f"  {item}" for item in c.launched_by]
    if report.columns is not None:
        lines += ["", f"Columns of {report.asset} (<- the columns each is computed from):"]
        for tree in report.columns:
            lines += ["  " + line for line in format_tree(tree, arrow="<- ")]
        if report.column_tables:
            lines += ["", "Where the column chains end (tables built outside SQL models):"]
            lines += [f"  {origin}" for origin in report.column_tables]
    return "\n".join(lines)
