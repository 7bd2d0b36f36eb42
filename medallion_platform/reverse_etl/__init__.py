"""Reverse ETL: gold rows synced to SaaS tools (CRM, marketing, support), diff-based.

Plain Python: a sync (``spec``) names a source query, a destination, an identity and a field
mapping; the engine diffs the rows against the last synced state kept in the warehouse and
sends only the changes through a destination client (``destinations.base.Destination``).
"""
