"""GPU harness fixtures. Every test under tests/gpu is skipped unless torch with CUDA is
importable and a GPU is visible, so `python -m pytest` collects this folder cleanly on
CPU-only machines (and CI, which has no torch).

Fixtures:
  harness  ctypes.CDLL of build/gpu_harness/libtfsort_gpu_harness.so, built once per session
           by tests/gpu/build.py (nvcc only, no TensorFlow)
  ptr      ptr(t): a torch CUDA tensor's data pointer as ctypes.c_void_p
  stream   stream(): torch.cuda.current_stream().cuda_stream as ctypes.c_void_p
Device memory comes from torch tensors; a workspace is
torch.empty(bytes, dtype=torch.uint8, device="cuda").
"""

import ctypes
import importlib.util
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def gpu_available():
    if importlib.util.find_spec("torch") is None:
        return False
    try:
        import torch
    except Exception:  # a broken torch install counts as none
        return False
    return bool(torch.cuda.is_available() and torch.cuda.device_count() > 0)


GPU = gpu_available()


def pytest_collection_modifyitems(config, items):
    if GPU:
        return
    skip = pytest.mark.skip(reason="tests/gpu needs torch with CUDA and a visible GPU")
    for item in items:
        if os.path.dirname(str(item.fspath)) == HERE:
            item.add_marker(skip)


def ptr_of(t):
    return ctypes.c_void_p(t.data_ptr())


def current_stream():
    import torch

    return ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)


@pytest.fixture(scope="session")
def harness():
    if not GPU:
        pytest.skip("no GPU")
    # Loaded by path: "build" is also the name of a PyPI package.
    path = os.path.join(HERE, "build.py")
    spec = importlib.util.spec_from_file_location("tfsort_gpu_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return ctypes.CDLL(module.build())


@pytest.fixture
def ptr():
    return ptr_of


@pytest.fixture
def stream():
    return current_stream
