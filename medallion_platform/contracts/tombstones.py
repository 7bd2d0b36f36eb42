"""A contract's tombstone policy: what a stream message with a null value does to silver.

A tombstone (Kafka's null value; bronze ``_tombstone``) says "this key is gone", not "this
row is malformed", so it is never quarantined for missing fields. Runs on the checked rows
(``_checked``, with ``_tombstone`` and ``_reasons``) inside the caller's transaction, after
quarantine and counts, before the merge:

* ``skip``: tombstones leave ``_checked``; the run counts them (``SilverRunStats.tombstones``).
* ``delete``: per key, the last valid message in arrival order (``_batch_id``,
  ``_row_number``: offset order within a partition, and Kafka keeps a key in one partition)
  decides, as log compaction does. If it is a tombstone, the key leaves silver and none of
  its messages of this run are merged; otherwise the tombstones go and the last version
  wins as usual. A later version brings the key back. Arrival order is the only order, so a
  rebuild from bronze gives the same table as any sequence of runs.
"""

from __future__ import annotations

import duckdb

from medallion_platform.contracts.spec import Contract
from medallion_platform.warehouse.identifiers import qualified, quote


def apply_tombstones(conn: duckdb.DuckDBPyConnection, contract: Contract) -> int:
    """Apply the policy to ``_checked``; returns the keys removed from silver (``delete``)."""
    removed = 0
    if contract.tombstones == "delete":
        silver = qualified("silver", contract.name)
        keys = ", ".join(quote(k) for k in contract.business_key)

        def join(left: str, right: str) -> str:
            return " AND ".join(
                f"{left}.{quote(k)} = {right}.{quote(k)}" for k in contract.business_key
            )

        conn.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _dead_keys AS
            SELECT {keys} FROM _checked WHERE len(_reasons) = 0
            QUALIFY row_number() OVER (
                PARTITION BY {keys} ORDER BY _batch_id DESC, _row_number DESC
            ) = 1 AND _tombstone
            """
        )
        removed = conn.execute(
            f"SELECT count(*) FROM {silver} s SEMI JOIN _dead_keys d ON {join('s', 'd')}"
        ).fetchone()[0]
        conn.execute(f"DELETE FROM {silver} s USING _dead_keys d WHERE {join('s', 'd')}")
        conn.execute(f"DELETE FROM _checked c USING _dead_keys d WHERE {join('c', 'd')}")
        conn.execute("DROP TABLE _dead_keys")
    conn.execute("DELETE FROM _checked WHERE _tombstone")
    return removed
