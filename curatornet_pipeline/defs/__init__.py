"""Dagster layer: thin adapters from assets to the plain-Python core."""
