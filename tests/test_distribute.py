"""MirroredStrategy over two logical CPU devices: SpearmanLoss + SoftSort in model.fit.

Logical devices must be configured before TensorFlow initialises its runtime, so this file
configures them at import and skips when that is no longer possible (for example when it
is collected after other tests ran in the same process). tests/test_keras.py runs it in
its own process.
"""

import numpy as np
import pytest
import tensorflow as tf

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
except RuntimeError:
    pass  # runtime already initialised; checked below

import keras  # noqa: E402

import tfsort  # noqa: E402

pytestmark = pytest.mark.skipif(
    len(tf.config.list_logical_devices("CPU")) < 2,
    reason="needs 2 logical CPUs configured before TF starts (run this file on its own)",
)


def test_mirrored_strategy_fit_with_spearman_loss_and_soft_sort():
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    r = np.random.default_rng(0)
    x = r.normal(size=(64, 8, 3)).astype("float32")
    y = np.tanh(x @ np.array([1.0, -2.0, 0.5], "float32")).astype("float32")
    with strategy.scope():
        inp = keras.Input((8, 3))
        scores = keras.layers.Reshape((8,))(keras.layers.Dense(1)(inp))
        sorted_scores = tfsort.layers.SoftSort(regularization_strength=0.5)(scores)
        out = keras.layers.Add()([scores, keras.layers.Dense(8)(sorted_scores)])
        model = keras.Model(inp, out)
        model.compile(
            keras.optimizers.Adam(0.05),
            loss=tfsort.losses.SpearmanLoss(regularization_strength=0.1),
            metrics=[tfsort.metrics.SpearmanCorrelation()],
        )
    hist = model.fit(x, y, batch_size=16, epochs=5, verbose=0).history
    assert np.all(np.isfinite(hist["loss"])) and hist["loss"][-1] < hist["loss"][0], hist
    assert hist["spearman_correlation"][-1] > hist["spearman_correlation"][0]
