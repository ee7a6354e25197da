"""Helpers shared by the commands: JSON and PNG output written atomically."""

from __future__ import annotations

import json

from delf.atomic import atomic_write_bytes

__all__ = ["atomic_write_bytes", "write_json", "write_png"]


def write_json(path: str, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def write_png(path: str, rgb) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode a PNG for {path}")
    atomic_write_bytes(path, buf.tobytes())
