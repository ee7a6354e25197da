"""Import TensorFlow once, quietly.

On a machine without a GPU, TensorFlow's C++ start-up writes CUDA probing
messages to stderr through absl before TF_CPP_MIN_LOG_LEVEL takes effect; to
a user of the command line they look like errors. The import runs with file
descriptor 2 pointed at /dev/null; Python exceptions still propagate.
"""

from __future__ import annotations

import os
import sys


def import_tensorflow():
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.constant(0)  # device discovery happens on first use; keep it quiet too
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tf
