"""Shared pytest fixtures: quiet TF logs, `reference` importable, eager/tf.function modes."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402


@pytest.fixture(params=["eager", "function"])
def mode(request):
    """Returns wrap(fn): fn itself (eager) or tf.function(fn) (graph), same call signature."""

    def wrap(fn, **function_kwargs):
        if request.param == "eager":
            return fn
        return tf.function(fn, **function_kwargs)

    wrap.name = request.param
    return wrap
