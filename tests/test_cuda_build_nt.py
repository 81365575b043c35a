"""A CUDA-enabled build registers GPU kernels for the network and sigmoid top-k ops in every
dtype (SortingNetworkPermutation and SparseTopK stay CPU-only); a CPU-only build registers
none. Runs on machines without a GPU (registration needs no device)."""

import pytest
import tensorflow as tf

import tfsort  # noqa: F401  (registers the ops)
from tfsort import _build_info

GPU_OPS = [
    "SortingNetwork",
    "SortingNetworkGrad",
    "SortingNetworkGradAdjoint",
    "CompareSwap",
    "CompareSwapGrad",
    "CompareSwapGradAdjoint",
    "SigmoidTopK",
    "SigmoidTopKGrad",
]
CPU_ONLY_OPS = ["SortingNetworkPermutation", "SortingNetworkPermutationGrad", "SparseTopK", "SparseTopKGrad"]


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
