"""pytest plugin: runs the network and top-k harness tests (tests/gpu) without a GPU.

    TFSORT_NT_EMULATE=1 PYTHONPATH=tests/cuda_host python -m pytest --noconftest \\
        -p nt_emulate_plugin tests/gpu/test_networks_gpu.py tests/gpu/test_topk_gpu.py

Provides the `harness` fixture as tests/cuda_host/nt_host_driver.cc built with g++ and
-DNT_EMULATE_CAPI: the tfsort_h_* entry points of capi_networks.cu.cc / capi_topk.cu.cc
(float32 and float64) implemented by running the launchers' step functions on the host.
This checks the harness glue, the NumPy references and the tolerances; it does not run the
CUDA kernels.
"""

import ctypes
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def harness(tmp_path_factory):
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    inc = None
    for base in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if base and os.path.exists(os.path.join(base, "include", "cuda_runtime_api.h")):
            inc = os.path.join(base, "include")
    if cxx is None or inc is None:
        pytest.skip("needs g++ and the CUDA headers")
    out = str(tmp_path_factory.mktemp("nt_emulate") / "nt_emulate.so")
    src = os.path.join(ROOT, "tests", "cuda_host", "nt_host_driver.cc")
    subprocess.check_call([cxx, "-std=c++17", "-O2", "-shared", "-fPIC", "-DNT_EMULATE_CAPI",
                           "-I" + ROOT, "-I" + inc, src, "-o", out])
    return ctypes.CDLL(out)
