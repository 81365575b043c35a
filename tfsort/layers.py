"""Keras 3 layers wrapping tfsort's differentiable sorting, ranking and top-k.

Each layer is a thin, serializable wrapper around the public function of the same name
(:func:`tfsort.soft_sort`, :func:`tfsort.soft_rank`, :func:`tfsort.diff_sort`,
:func:`tfsort.soft_topk`) and takes the same arguments. Layers keep the input's shape and
dtype, so under a mixed-precision policy they run on float16 / bfloat16 inputs (the ops
compute in float32 internally).

Every layer sets ``supports_jit = False`` (design.md section 5): Keras' default
``jit_compile="auto"`` would otherwise turn XLA on whenever a GPU is present. An explicit
``jit_compile=True`` still works, because the functions switch to their composite XLA path.
"""

import numbers

import keras
import numpy as np

import tfsort
from tfsort import _utils
from tfsort.networks import NETWORKS, RELAXATIONS

__all__ = ["SoftSort", "SoftRank", "DiffSort", "SoftTopK"]

TOPK_METHODS = ("sigmoid", "sparse")


def _check_axis(axis):
    if isinstance(axis, bool) or not isinstance(axis, (numbers.Integral, np.integer)):
        raise TypeError(f"axis must be an integer, got {axis!r}")
    return int(axis)


def _check_direction(direction):
    _utils.check_descending(direction)  # raises naming `direction`
    return direction.upper()


def _check_k(k, method):
    """k: a positive number; an integer for the "sparse" method (k < n is checked at call)."""
    if isinstance(k, bool) or not isinstance(k, (numbers.Real, np.number)):
        raise TypeError(f"k must be a positive Python number, got {k!r}")
    if method == "sparse":
        if not float(k).is_integer():
            raise ValueError(f'k must be an integer for method="sparse", got {k!r}')
        k = int(k)
    else:
        k = int(k) if isinstance(k, (numbers.Integral, np.integer)) else float(k)
    if not (k > 0 and np.isfinite(k)):
        raise ValueError(f"k must be positive and finite, got {k!r}")
    return k


class _ElementwiseShapeLayer(keras.layers.Layer):
    """Shared plumbing: keep shape, refuse auto-XLA, validate the axis against the rank."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        # Keras' jit_compile="auto" must not pick XLA because of this layer (design.md 5).
        self.supports_jit = False
        self.axis = _check_axis(axis)

    def build(self, input_shape):
        rank = len(input_shape)
        if rank == 0:
            raise ValueError(f"{type(self).__name__} needs inputs of rank >= 1, got a scalar")
        _utils.normalize_axis(self.axis, rank)  # raises naming `axis`
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class _SoftIsotonicLayer(_ElementwiseShapeLayer):
    """Shared arguments, call and config of SoftSort and SoftRank (which differ only in the
    function they call, named by _FUNCTION)."""

    _FUNCTION = None

    def __init__(
        self,
        regularization="l2",
        regularization_strength=1.0,
        direction="ASCENDING",
        axis=-1,
        **kwargs,
    ):
        super().__init__(axis=axis, **kwargs)
        self.regularization = _utils.check_regularization(regularization)
        self.regularization_strength = _utils.check_strength(regularization_strength)
        self.direction = _check_direction(direction)

    def call(self, inputs):
        return getattr(tfsort, self._FUNCTION)(
            inputs,
            regularization=self.regularization,
            regularization_strength=self.regularization_strength,
            direction=self.direction,
            axis=self.axis,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "regularization": self.regularization,
            "regularization_strength": self.regularization_strength,
            "direction": self.direction,
        }


@keras.saving.register_keras_serializable(package="tfsort")
class SoftSort(_SoftIsotonicLayer):
    """Differentiable sort along an axis (Blondel et al., ICML 2020).

    Calls :func:`tfsort.soft_sort`. As ``regularization_strength`` -> 0 the output is the
    hard sort; larger values smooth it towards the row mean.

    Args:
      regularization: "l2" or "kl" (case-insensitive).
      regularization_strength: eps > 0, finite.
      direction: "ASCENDING" or "DESCENDING" (case-insensitive).
      axis: the axis to sort along; every other axis is batch.
      **kwargs: standard Layer arguments (name, dtype, ...).

    Returns:
      Softly sorted values with the shape and dtype of the input.

    Raises:
      ValueError, TypeError: naming a bad argument, at construction.

    Example:
      >>> layer = tfsort.layers.SoftSort(regularization_strength=0.01)
      >>> layer(np.array([[3., 1., 2.]], "float32")).numpy()
      array([[1., 2., 3.]], dtype=float32)
    """

    _FUNCTION = "soft_sort"


@keras.saving.register_keras_serializable(package="tfsort")
class SoftRank(_SoftIsotonicLayer):
    """Differentiable ranks along an axis (Blondel et al., ICML 2020).

    Calls :func:`tfsort.soft_rank`. Ranks start at 1 (the smallest value when ASCENDING).

    Args:
      regularization: "l2" or "kl" (case-insensitive).
      regularization_strength: eps > 0, finite; smaller is closer to hard ranks.
      direction: "ASCENDING" (rank 1 = smallest) or "DESCENDING" (rank 1 = largest).
      axis: the axis to rank along; every other axis is batch.
      **kwargs: standard Layer arguments.

    Returns:
      Soft ranks with the shape and dtype of the input.

    Raises:
      ValueError, TypeError: naming a bad argument, at construction.

    Example:
      >>> layer = tfsort.layers.SoftRank(regularization_strength=0.001)
      >>> layer(np.array([[8., 0., 5.]], "float32")).numpy()
      array([[3., 1., 2.]], dtype=float32)
    """

    _FUNCTION = "soft_rank"


@keras.saving.register_keras_serializable(package="tfsort")
class DiffSort(_ElementwiseShapeLayer):
    """Differentiable sorting network (Petersen et al., ICML 2021 / ICLR 2022).

    Calls :func:`tfsort.diff_sort` (looked up when called, so this module imports on its
    own). Each comparator of a bitonic or odd-even network is relaxed by a sigmoid-like
    function; see design.md section 2 for the relaxation names.

    Args:
      network: "bitonic" or "odd_even".
      relaxation: "logistic", "logistic_phi", "gaussian", "reciprocal", "cauchy",
        "optimal" or "softmax".
      steepness: > 0, finite; larger is closer to the hard sort.
      direction: "ASCENDING" or "DESCENDING".
      axis: the axis to sort along.
      **kwargs: standard Layer arguments.

    Returns:
      Relaxed sorted values with the shape and dtype of the input.

    Raises:
      ValueError, TypeError: naming a bad argument, at construction.

    Example:
      >>> layer = tfsort.layers.DiffSort(steepness=100.0)
      >>> y = layer(np.array([[3., 1., 2.]], "float32"))  # approximately [[1, 2, 3]]
    """

    def __init__(
        self,
        network="bitonic",
        relaxation="cauchy",
        steepness=10.0,
        direction="ASCENDING",
        axis=-1,
        **kwargs,
    ):
        super().__init__(axis=axis, **kwargs)
        self.network = _utils.check_choice(network, "network", NETWORKS)
        self.relaxation = _utils.check_choice(relaxation, "relaxation", RELAXATIONS)
        self.steepness = _utils.check_strength(steepness, name="steepness")
        self.direction = _check_direction(direction)

    def call(self, inputs):
        return tfsort.diff_sort(
            inputs,
            network=self.network,
            relaxation=self.relaxation,
            steepness=self.steepness,
            direction=self.direction,
            axis=self.axis,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "network": self.network,
            "relaxation": self.relaxation,
            "steepness": self.steepness,
            "direction": self.direction,
        }


@keras.saving.register_keras_serializable(package="tfsort")
class SoftTopK(_ElementwiseShapeLayer):
    """Differentiable top-k mask along an axis.

    Calls :func:`tfsort.soft_topk`: a mask in [0, 1] that sums to k along ``axis``.
    "sigmoid": p = sigmoid((x + t) / eps) with the threshold t set so that sum(p) = k.
    "sparse": the L2 projection of x / eps onto {0 <= m <= 1, sum(m) = k}, exactly the
    top-k indicator once eps is small enough.

    Args:
      k: the number of items kept; 0 < k < n (n is checked when called). "sigmoid"
        accepts a real k, "sparse" needs an integer.
      regularization_strength: eps > 0, finite.
      method: "sigmoid" or "sparse".
      axis: the axis to select along.
      **kwargs: standard Layer arguments.

    Returns:
      The soft mask, with the shape and dtype of the input.

    Raises:
      ValueError, TypeError: naming a bad argument, at construction.

    Example:
      >>> layer = tfsort.layers.SoftTopK(k=2, regularization_strength=0.01)
      >>> m = layer(np.array([[3., 1., 2., 0.]], "float32"))  # about [[1, 0, 1, 0]]
    """

    def __init__(self, k, regularization_strength=1.0, method="sigmoid", axis=-1, **kwargs):
        super().__init__(axis=axis, **kwargs)
        self.method = _utils.check_choice(method, "method", TOPK_METHODS)
        self.k = _check_k(k, self.method)
        self.regularization_strength = _utils.check_strength(regularization_strength)

    def build(self, input_shape):
        super().build(input_shape)
        n = input_shape[self.axis]
        if n is not None and not self.k < n:
            raise ValueError(f"k must satisfy 0 < k < n, got k={self.k} with n={n}")

    def call(self, inputs):
        return tfsort.soft_topk(
            inputs,
            self.k,
            regularization_strength=self.regularization_strength,
            method=self.method,
            axis=self.axis,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "k": self.k,
            "regularization_strength": self.regularization_strength,
            "method": self.method,
        }
