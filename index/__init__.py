"""Annoy descriptor index with segments, tombstones and an atomic manifest."""
