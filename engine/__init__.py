"""The engine's public API and the workflows built on its three stages.

    from engine import Engine
    with Engine.open("out/demo/index") as engine:
        answer = engine.search("query.jpg")

- ``engine.engine``: ``Engine`` (open or build an index; search, match, add, remove).
- ``engine.searching``: one query's search, verification and answer (what Engine.search runs).
- ``engine.pairs``: two photos verified against each other (``delf match``).
- ``engine.collection``: batch matching of a photo collection (``delf collection``).
- ``engine.calibration``: fitting the confidence on labelled photos (``delf calibrate``).
- ``engine.demo``: the bundled-photos demo (``delf demo``).
- ``engine.training``: attention training (``delf train``).

Importing this package never imports TensorFlow: the extractor is built on
the first photo that needs it.
"""

from verify.rerank import Answer, Result

from .engine import Engine, EngineConf
from .pairs import Pair

__all__ = ["Answer", "Engine", "EngineConf", "Pair", "Result"]
