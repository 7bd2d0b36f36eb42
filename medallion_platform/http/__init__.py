"""One HTTP client core for the REST sources and the reverse-ETL destinations (no Dagster).

See :mod:`medallion_platform.http.core`: retries with backoff and ``Retry-After`` (and an
API's own "should retry" header, Stripe's ``Stripe-Should-Retry``), waits on "slow down"
answers, a whole-request deadline, pacing and re-authentication hooks, the API's own error
text, and secret masking. Importing this package imports nothing.
"""
