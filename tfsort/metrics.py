"""Keras 3 metrics: exact (hard-rank) Spearman correlation per row.

Unlike :class:`tfsort.losses.SpearmanLoss`, the metric uses hard ranks with ties averaged,
matching ``scipy.stats.spearmanr`` row by row. It is written in plain TF ops (four stable
argsorts per row, O(n log n)), so it runs eagerly, in tf.function and under XLA.
"""

import keras
import tensorflow as tf

__all__ = ["SpearmanCorrelation", "average_ranks", "spearman_correlation"]


def _positions(x):
    """0-based ascending position of every element under a stable sort (ties by index)."""
    # tf.argsort is stable (ties keep index order); argsort of the permutation inverts it.
    return tf.argsort(tf.argsort(x, axis=-1, stable=True), axis=-1, stable=True)


def average_ranks(x):
    """Hard ranks along the last axis, starting at 1, with ties given their average rank.

    A tie group occupying sorted positions f..l gets (f + l) / 2 + 1 for every member. The
    stable ascending position of member j (by index) is f + j; sorting the reversed row
    gives it f + (size - 1 - j); their mean is (f + l) / 2 without any segment bookkeeping.

    Args:
      x: float tensor of rank >= 1.

    Returns:
      float64 ranks of the shape of x (float64 keeps them exact for any realistic n).
    """
    x = tf.convert_to_tensor(x)
    forward = _positions(x)
    backward = tf.reverse(_positions(tf.reverse(x, axis=[-1])), axis=[-1])
    return tf.cast(forward + backward, tf.float64) / 2.0 + 1.0


def spearman_correlation(y_true, y_pred):
    """Exact Spearman rho per row (last axis); 0 for a constant row instead of NaN.

    Formula:
      r_t = average_ranks(y_true), r_p = average_ranks(y_pred)
      rho = Pearson(r_t, r_p) along the last axis

    Returns:
      float64 correlations of shape y_pred.shape[:-1].
    """
    a = average_ranks(y_true)
    b = average_ranks(y_pred)
    a -= tf.reduce_mean(a, axis=-1, keepdims=True)
    b -= tf.reduce_mean(b, axis=-1, keepdims=True)
    cov = tf.reduce_sum(a * b, axis=-1)
    var = tf.reduce_sum(a * a, axis=-1) * tf.reduce_sum(b * b, axis=-1)
    ok = var > 0
    return tf.where(ok, cov / tf.sqrt(tf.where(ok, var, tf.ones_like(var))), tf.zeros_like(cov))


@keras.saving.register_keras_serializable(package="tfsort")
class SpearmanCorrelation(keras.metrics.Metric):
    """Mean exact Spearman rank correlation over rows.

    Each row of y_pred (last axis = items) is ranked with ties averaged and correlated with
    the ranks of the same row of y_true, exactly as ``scipy.stats.spearmanr(y_true[i],
    y_pred[i])``; the metric is the (sample-weighted) mean over all rows seen. Constant
    rows count as correlation 0.

    Formula:
      rho_i = Pearson(average_ranks(y_true_i), average_ranks(y_pred_i))
      result = sum_i w_i rho_i / sum_i w_i

    Args:
      name: metric name.
      dtype: dtype of the state and result (float32 by default).

    Returns:
      ``result()``: a scalar, the weighted mean correlation (0 before any update).

    Raises:
      ValueError: when y_true and y_pred shapes differ or y_pred is a scalar.

    Example:
      >>> m = tfsort.metrics.SpearmanCorrelation()
      >>> m.update_state([[1., 2., 3., 4.]], [[1., 3., 2., 4.]])
      >>> round(float(m.result()), 4)
      0.8
    """

    def __init__(self, name="spearman_correlation", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = tf.convert_to_tensor(y_pred)
        y_true = tf.convert_to_tensor(y_true)
        if y_pred.shape.rank == 0:
            raise ValueError("SpearmanCorrelation needs y_pred of rank >= 1, got a scalar")
        if not y_true.shape.is_compatible_with(y_pred.shape):
            raise ValueError(
                "SpearmanCorrelation needs y_true and y_pred of the same shape, got y_true "
                f"{y_true.shape} and y_pred {y_pred.shape}"
            )
        # float64 before ranking: float16 inputs would merge distinct values into ties.
        rho = spearman_correlation(tf.cast(y_true, tf.float64), tf.cast(y_pred, tf.float64))
        if sample_weight is None:
            weight = tf.ones_like(rho)
        else:
            weight = tf.cast(tf.convert_to_tensor(sample_weight), tf.float64)
            if weight.shape.rank is not None and weight.shape.rank == rho.shape.rank + 1:
                weight = tf.squeeze(weight, axis=-1)  # (batch, 1) per-row weights
            weight = tf.broadcast_to(weight, tf.shape(rho))
        self.total.assign_add(tf.cast(tf.reduce_sum(weight * rho), self.dtype))
        self.count.assign_add(tf.cast(tf.reduce_sum(weight), self.dtype))

    def result(self):
        return tf.math.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return super().get_config()
