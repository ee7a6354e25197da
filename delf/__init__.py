"""Attentive DELF-style local features.

Importing this package is cheap: TensorFlow is imported only when an
extractor is built (``delf.Extractor``).
"""

from .conf import ExtractorConf, PRESETS
from .features import Features

__all__ = ["Extractor", "ExtractorConf", "Features", "PRESETS", "extract_to_h5"]


def __getattr__(name):
    if name == "Extractor":
        from .extractor import Extractor

        return Extractor
    if name == "extract_to_h5":
        from .extract import extract_to_h5

        return extract_to_h5
    raise AttributeError(name)
