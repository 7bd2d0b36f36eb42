"""Destination clients (httpx) for the SaaS APIs the platform syncs to."""
