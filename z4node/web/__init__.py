"""Peer status endpoints under ``/_z4/`` (read-only JSON, no secrets)."""
