"""Keras 3 losses built on tfsort's soft ranks and soft top-k.

- :class:`SpearmanLoss`: 1 - soft Spearman correlation per row (Blondel et al., ICML 2020).
- :class:`SoftNDCGLoss`: 1 - NDCG with the hard ranks replaced by soft ranks, for
  listwise learning to rank.
- :class:`TopKCrossEntropy`: a top-k classification loss on a soft top-k mask.

Losses compute in float32 (Keras casts to the loss dtype, floatx by default, even under a
mixed-precision policy), work under ``jit_compile=True`` (the functions take their
composite XLA path there) and check shapes when called, with messages naming y_true and
y_pred rather than failing deep inside a graph.
"""

import keras
import numpy as np
import tensorflow as tf

import tfsort
from tfsort import _utils
from tfsort.layers import TOPK_METHODS, _check_k

__all__ = ["SpearmanLoss", "SoftNDCGLoss", "TopKCrossEntropy"]


def _compute_dtype(x):
    x = tf.convert_to_tensor(x)
    if x.dtype in (tf.float16, tf.bfloat16) or not x.dtype.is_floating:
        return tf.cast(x, tf.float32)
    return x


def _check_ranked_pair(loss, y_true, y_pred):
    """y_true and y_pred of the same shape, rank >= 2 (batch, ..., n)."""
    name = type(loss).__name__
    y_pred = _compute_dtype(y_pred)
    y_true = tf.cast(y_true, y_pred.dtype)
    if y_pred.shape.rank is not None and y_pred.shape.rank < 2:
        raise ValueError(
            f"{name} needs y_pred of rank >= 2, shape (batch, n), got shape {y_pred.shape}"
        )
    if not y_true.shape.is_compatible_with(y_pred.shape):
        raise ValueError(
            f"{name} needs y_true and y_pred of the same shape (batch, n), got y_true "
            f"{y_true.shape} and y_pred {y_pred.shape}"
        )
    return y_true, y_pred


@keras.saving.register_keras_serializable(package="tfsort")
class SpearmanLoss(keras.losses.Loss):
    """One minus the soft Spearman rank correlation of each row.

    Both y_pred and y_true are soft-ranked with the same settings (as in torchsort's
    README example; :func:`tfsort.spearmanr`), so the loss is differentiable in y_pred
    and equals 1 - Spearman's rho as ``regularization_strength`` -> 0. A constant row has
    correlation 0 (loss 1), never NaN.

    Formula:
      r_p = soft_rank(y_pred), r_t = soft_rank(y_true)   (along the last axis)
      rho = sum_i (r_p,i - mean r_p)(r_t,i - mean r_t) / (||r_p - mean r_p|| ||r_t - mean r_t||)
      loss = 1 - rho

    Args:
      regularization: "l2" or "kl".
      regularization_strength: eps > 0, finite. Soft ranks scale with 1 / eps, so choose
        it relative to the spread of the scores (smaller is closer to hard ranks).
      reduction: Keras reduction ("sum_over_batch_size" by default).
      name: loss name.
      dtype: loss dtype (float32 by default, also under mixed precision).

    Returns:
      From ``call``: the loss per row, shape y_pred.shape[:-1].

    Raises:
      ValueError: for bad arguments (at construction), y_pred of rank < 2 or a y_true of
        another shape (when called).

    Example:
      >>> loss = tfsort.losses.SpearmanLoss(regularization_strength=1e-3)
      >>> round(float(loss([[1., 2., 3., 4.]], [[1., 3., 2., 4.]])), 4)
      0.2
    """

    def __init__(
        self,
        regularization="l2",
        regularization_strength=1.0,
        reduction="sum_over_batch_size",
        name="spearman_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.regularization = _utils.check_regularization(regularization)
        self.regularization_strength = _utils.check_strength(regularization_strength)

    def call(self, y_true, y_pred):
        y_true, y_pred = _check_ranked_pair(self, y_true, y_pred)
        rho = tfsort.spearmanr(
            y_pred,
            y_true,
            regularization=self.regularization,
            regularization_strength=self.regularization_strength,
        )
        return 1.0 - rho

    def get_config(self):
        return {
            **super().get_config(),
            "regularization": self.regularization,
            "regularization_strength": self.regularization_strength,
        }


@keras.saving.register_keras_serializable(package="tfsort")
class SoftNDCGLoss(keras.losses.Loss):
    """One minus a soft NDCG for listwise learning to rank.

    y_pred holds scores and y_true graded relevances (>= 0) of the items of each list,
    both of shape (batch, n). The hard descending rank of each item in NDCG is replaced by
    its soft rank (rank 1 = highest score), which makes the loss differentiable; as
    ``regularization_strength`` -> 0 it becomes 1 - NDCG (1 - NDCG@k with ``k``).

    Formula:
      r = soft_rank(y_pred, direction="DESCENDING")      (rank 1 = top score)
      g = 2^y_true - 1,  D(r) = 1 / log2(1 + r)
      w(r) = 1 without k;  w(r) = clip(k + 1 - r, 0, 1) with k (a ramp from rank k to
             k + 1, so items leave the top k continuously)
      DCG = sum_i g_i D(r_i) w(r_i),  IDCG = sum_{j <= min(k, n)} g_(j) / log2(1 + j)
             with g_(1) >= g_(2) >= ... the gains sorted in decreasing order
      loss = 1 - DCG / IDCG,  and 0 for a list whose gains are all 0 (IDCG = 0).

    Args:
      regularization_strength: eps > 0, finite; smaller is closer to hard ranks. Soft
        ranks move by (score difference) / eps, so scale it to the scores.
      k: optional cutoff (positive integer) for NDCG@k; None uses the whole list.
      reduction: Keras reduction.
      name: loss name.
      dtype: loss dtype (float32 by default).

    Returns:
      From ``call``: the loss per list, shape y_pred.shape[:-1].

    Raises:
      ValueError: for bad arguments (at construction), y_pred of rank < 2 or a y_true of
        another shape (when called).

    Example:
      >>> loss = tfsort.losses.SoftNDCGLoss(regularization_strength=1e-3)
      >>> float(loss([[3., 2., 0.]], [[0.9, 0.5, 0.1]]))  # perfect order: loss 0
      0.0
    """

    def __init__(
        self,
        regularization_strength=1.0,
        k=None,
        reduction="sum_over_batch_size",
        name="soft_ndcg_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.regularization_strength = _utils.check_strength(regularization_strength)
        if k is not None:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise ValueError(f"k must be None or a positive integer, got {k!r}")
            k = int(k)
        self.k = k

    def call(self, y_true, y_pred):
        y_true, y_pred = _check_ranked_pair(self, y_true, y_pred)
        ranks = tfsort.soft_rank(
            y_pred,
            regularization_strength=self.regularization_strength,
            direction="DESCENDING",
        )
        gains = tf.pow(2.0 * tf.ones_like(y_true), y_true) - 1.0
        log2 = tf.math.log(tf.constant(2.0, y_pred.dtype))
        discount = log2 / tf.math.log1p(ranks)
        if self.k is not None:
            discount *= tf.clip_by_value(self.k + 1.0 - ranks, 0.0, 1.0)
        dcg = tf.reduce_sum(gains * discount, axis=-1)

        ideal = tf.sort(gains, axis=-1, direction="DESCENDING")
        positions = tf.cast(tf.range(1, tf.shape(ideal)[-1] + 1), ideal.dtype)
        ideal_discount = log2 / tf.math.log1p(positions)
        if self.k is not None:
            ideal_discount *= tf.cast(positions <= self.k, ideal.dtype)
        idcg = tf.reduce_sum(ideal * ideal_discount, axis=-1)
        ok = idcg > 0
        ndcg = dcg / tf.where(ok, idcg, tf.ones_like(idcg))
        return tf.where(ok, 1.0 - ndcg, tf.zeros_like(ndcg))

    def get_config(self):
        return {
            **super().get_config(),
            "regularization_strength": self.regularization_strength,
            "k": self.k,
        }


@keras.saving.register_keras_serializable(package="tfsort")
class TopKCrossEntropy(keras.losses.Loss):
    """Top-k classification loss on a soft top-k mask (design.md section 3).

    y_pred are logits of shape (..., C). y_true is either an integer class id per row, of
    shape (...,) or (..., 1), or a one-hot row of shape (..., C); which one is decided by
    the static shape. The loss is zero once the true class sits safely inside the soft top
    k, and pushes its logit up smoothly otherwise.

    Formula:
      m = soft_topk(y_pred, k, regularization_strength, method)   (sum(m) = k per row)
      loss = -log(max(m[y], 1e-7))      (with one-hot y_true: m[y] = sum_c y_c m_c)

    Args:
      k: the top-k size, 0 < k < C ("sparse" needs an integer).
      regularization_strength: eps > 0, finite.
      method: "sigmoid" or "sparse" (see :func:`tfsort.soft_topk`).
      reduction: Keras reduction.
      name: loss name.
      dtype: loss dtype (float32 by default).

    Returns:
      From ``call``: the loss per row, shape y_pred.shape[:-1].

    Raises:
      ValueError: for bad arguments (at construction) or y_true of a shape that is neither
        ids nor one-hot for y_pred (when called).

    Example:
      >>> loss = tfsort.losses.TopKCrossEntropy(k=2, regularization_strength=0.1)
      >>> v = loss([2], [[3.0, 1.0, 2.0, 0.0]])  # class 2 is second: small loss
    """

    def __init__(
        self,
        k,
        regularization_strength=1.0,
        method="sigmoid",
        reduction="sum_over_batch_size",
        name="top_k_cross_entropy",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.method = _utils.check_choice(method, "method", TOPK_METHODS)
        self.k = _check_k(k, self.method)
        self.regularization_strength = _utils.check_strength(regularization_strength)

    def _true_mass(self, y_true, m):
        """m[y] per row, for id or one-hot y_true."""
        rank = m.shape.rank
        classes = m.shape[-1]
        shape = y_true.shape
        if rank is None or shape.rank is None:
            raise ValueError(f"{self.name} needs y_true and y_pred of known rank")
        if shape.rank == rank and shape[-1] is not None and shape[-1] == classes and classes != 1:
            if not shape.is_compatible_with(m.shape):
                raise ValueError(
                    f"one-hot y_true must have the shape of y_pred, got y_true {shape} and "
                    f"y_pred {m.shape}"
                )
            return tf.reduce_sum(tf.cast(y_true, m.dtype) * m, axis=-1)
        if shape.rank == rank and shape[-1] == 1:
            y_true = tf.squeeze(y_true, axis=-1)
            shape = y_true.shape
        if shape.rank != rank - 1 or not shape.is_compatible_with(m.shape[:-1]):
            raise ValueError(
                f"y_true must hold class ids of shape {m.shape[:-1]} (or with a trailing 1) "
                f"or one-hot rows of shape {m.shape} for y_pred {m.shape}, got y_true {shape}"
            )
        ids = tf.cast(y_true, tf.int32)
        depth = tf.shape(m)[-1]
        return tf.reduce_sum(tf.one_hot(ids, depth, dtype=m.dtype) * m, axis=-1)

    def call(self, y_true, y_pred):
        y_pred = _compute_dtype(y_pred)
        if y_pred.shape.rank is not None and y_pred.shape.rank < 1:
            raise ValueError(f"{self.name} needs logits y_pred of rank >= 1, got a scalar")
        m = tfsort.soft_topk(
            y_pred,
            self.k,
            regularization_strength=self.regularization_strength,
            method=self.method,
        )
        mass = self._true_mass(tf.convert_to_tensor(y_true), m)
        return -tf.math.log(tf.maximum(mass, 1e-7))

    def get_config(self):
        return {
            **super().get_config(),
            "k": self.k,
            "regularization_strength": self.regularization_strength,
            "method": self.method,
        }
