"""Helpers every layer of the engine shares, and that import nothing of it.

The bottom layer: ``delf`` (extraction), ``verify`` (geometry), ``index``,
``engine``, ``evaluation`` and ``tools`` may all import from here, and this
package imports none of them (tests/test_layers.py keeps it so).

- ``common.files``: atomic writes (nothing a user wrote is ever half-written), fsync, sha256.
- ``common.conf``: the base of every settings dataclass (``from_dict`` rejects unknown keys).
- ``common.labels``: the one reader of labels CSV files (photo, label).
"""
