"""The CUDA-aware build: CPU-only switch, and what a CUDA-enabled library registers.

These run on every machine: a CUDA-enabled tfsort/_tfsort_ops.so (built where nvcc exists)
must import and run its CPU kernels without a GPU, driver or libcudart, and must register a
GPU kernel in every dtype for every op of the isotonic family, the sorting networks and the
sigmoid top-k (SortingNetworkPermutation and SparseTopK stay CPU-only); a CPU-only build
registers none. Registration needs no device.
"""

import importlib.util
import os

import pytest
import tensorflow as tf

import tfsort  # noqa: F401  (loads the library)
from tfsort import _build_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GPU_OPS = [
    "IsotonicL2", "IsotonicKL", "IsotonicL2Grad", "IsotonicKLGrad",
    "SoftRank", "SoftSort", "SoftRankGrad", "SoftSortGrad",
    "SortingNetwork", "SortingNetworkGrad", "SortingNetworkGradAdjoint",
    "CompareSwap", "CompareSwapGrad", "CompareSwapGradAdjoint",
    "SigmoidTopK", "SigmoidTopKGrad",
]
CPU_ONLY_OPS = [
    "SortingNetworkPermutation", "SortingNetworkPermutationGrad", "SparseTopK", "SparseTopKGrad",
]


def _setup_module():
    spec = importlib.util.spec_from_file_location("tfsort_setup", os.path.join(ROOT, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # setup() itself only runs under __main__
    return module


@pytest.mark.parametrize("value", ["0", "false", "OFF"])
def test_tfsort_cuda_0_forces_cpu_only(monkeypatch, capsys, value):
    setup = _setup_module()
    monkeypatch.setenv("TFSORT_CUDA", value)
    assert setup.find_nvcc()[0] is None
    assert setup.cuda_config() is None
    assert "CPU-only build" in capsys.readouterr().out


def test_missing_nvcc_means_cpu_only(monkeypatch, tmp_path):
    setup = _setup_module()
    monkeypatch.delenv("TFSORT_CUDA", raising=False)
    monkeypatch.setenv("TFSORT_NVCC", str(tmp_path / "no-nvcc"))
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "no-cuda"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(os.path, "isfile", lambda p: False)
    assert setup.find_nvcc()[0] is None


def _gpu_kernel_types(op):
    from tensorflow.python.framework import kernels

    found = set()
    for k in kernels.get_registered_kernels_for_op("TFSort>" + op).kernel:
        if k.device_type == "GPU":
            for c in k.constraint:
                if c.name == "T":
                    found.update(tf.dtypes.as_dtype(t).name for t in c.allowed_values.list.type)
    return found


@pytest.mark.parametrize("op", GPU_OPS)
def test_gpu_kernels_registered_with_cuda(op):
    expected = {"float16", "bfloat16", "float32", "float64"} if _build_info.CUDA else set()
    assert _gpu_kernel_types(op) == expected


@pytest.mark.parametrize("op", CPU_ONLY_OPS)
def test_cpu_only_ops(op):
    assert _gpu_kernel_types(op) == set()


def test_library_runs_on_cpu():
    with tf.device("/CPU:0"):
        r = tfsort.soft_rank(tf.constant([[3.0, 1.0, 2.0]]), regularization_strength=0.1)
    assert r.numpy().tolist() == [[3.0, 1.0, 2.0]]
