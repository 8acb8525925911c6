"""Signing keys and the signed tokens of calls to downstream services."""
