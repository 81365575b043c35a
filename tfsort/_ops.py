"""Loads tfsort's compiled op library once, at import.

`import tfsort` therefore registers every op (and, through the family modules, every
gradient) before a SavedModel or .keras file that uses them is loaded.
"""

import os

import tensorflow as tf

_DIR = os.path.dirname(os.path.abspath(__file__))
LIBRARY_PATH = os.environ.get("TFSORT_LIBRARY") or os.path.join(_DIR, "_tfsort_ops.so")

_REBUILD = (
    "Rebuild tfsort against the installed TensorFlow from the source checkout:\n"
    "    pip install --no-deps --force-reinstall .     (or, for a development tree:\n"
    "    python setup.py build_ext --inplace)"
)


def _load():
    if not os.path.exists(LIBRARY_PATH):
        raise ImportError(
            f"tfsort: the compiled op library {LIBRARY_PATH} is missing. " + _REBUILD
        )
    if not os.environ.get("TFSORT_LIBRARY"):
        try:
            from tfsort._build_info import TF_VERSION
        except ImportError:
            TF_VERSION = None
        if TF_VERSION != tf.__version__:
            raise ImportError(
                f"tfsort: the op library was built for TensorFlow {TF_VERSION}, but "
                f"TensorFlow {tf.__version__} is installed. Custom ops are tied to the exact "
                f"TensorFlow they were compiled with. " + _REBUILD
            )
    try:
        return tf.load_op_library(LIBRARY_PATH)
    except (tf.errors.NotFoundError, OSError) as e:
        raise ImportError(f"tfsort: could not load {LIBRARY_PATH}: {e}\n" + _REBUILD) from e


ops = _load()
