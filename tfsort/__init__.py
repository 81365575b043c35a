"""tfsort: fast differentiable sorting, ranking and top-k for TensorFlow and Keras 3.

Importing tfsort loads the compiled op library and registers every op and gradient, which
is all that is needed before loading a SavedModel or .keras file that uses them.
"""

from tfsort import _ops  # noqa: F401  (loads the op library first)
from tfsort.isotonic import isotonic_regression, soft_rank, soft_sort, spearmanr
from tfsort.topk import soft_topk
from tfsort import layers, losses, metrics  # noqa: E402  (Keras classes; after the functions)

__version__ = "0.1.0"

__all__ = [
    "isotonic_regression",
    "layers",
    "losses",
    "metrics",
    "soft_rank",
    "soft_sort",
    "soft_topk",
    "spearmanr",
]
