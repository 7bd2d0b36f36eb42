"""The dev harness: demo generators, API emulators and local services (PostgreSQL, brokers).

The product (connectors, contracts, warehouse, gold, defs, ...) never imports this package;
only the ``medallion`` CLI's dev commands (``demo``, ``services``, ``dev``) and the tests do.
"""
