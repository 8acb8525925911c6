"""Shared domain of Platform Service: models, status machine, naming rules and settings."""
