"""Builds the TF-free CUDA test harness: build/gpu_harness/libtfsort_gpu_harness.so.

Compiles every tfsort/cuda/*.cu.cc (the launchers TensorFlow's kernels call) and every
tests/gpu/capi_*.cu.cc (extern "C" wrappers, tfsort_h_<kernel>_<f16|bf16|f32|f64>) with
nvcc alone: no TensorFlow headers or libraries are involved, so the launchers can be checked
against the NumPy reference from any Python with ctypes and torch (for device memory).

Usage: python tests/gpu/build.py [--force]      (prints the library path)
Environment: TFSORT_NVCC or CUDA_HOME pick nvcc (else PATH, else /usr/local/cuda/bin/nvcc);
TFSORT_HARNESS_ARCHS (e.g. "80;90") overrides the default "native" (the visible GPU).
Objects are cached per flag set and rebuilt only when a source or header is newer.
"""

import glob
import hashlib
import os
import shlex
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT_DIR = os.path.join(ROOT, "build", "gpu_harness")
LIB = os.path.join(OUT_DIR, "libtfsort_gpu_harness.so")


def find_nvcc():
    for cand in (
        os.environ.get("TFSORT_NVCC"),
        os.path.join(os.environ.get("CUDA_HOME") or "/nonexistent", "bin", "nvcc"),
        shutil.which("nvcc"),
        "/usr/local/cuda/bin/nvcc",
    ):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise RuntimeError("tests/gpu/build.py: no nvcc found (set TFSORT_NVCC or CUDA_HOME)")


def _arch_flags():
    archs = os.environ.get("TFSORT_HARNESS_ARCHS", "native")
    if archs.strip() == "native":
        return ["-arch=native"]
    flags = []
    for a in [a.strip() for a in archs.replace(",", ";").split(";") if a.strip()]:
        flags += ["-gencode", "arch=compute_%s,code=sm_%s" % (a, a)]
    return flags


def _newer(target, deps):
    if not os.path.exists(target):
        return True
    t = os.path.getmtime(target)
    return any(os.path.getmtime(d) > t for d in deps)


def _run(cmd):
    print(" ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.check_call(cmd)


def build(force=False):
    """Compiles what changed and links the harness library; returns its path."""
    nvcc = find_nvcc()
    sources = sorted(glob.glob(os.path.join(ROOT, "tfsort", "cuda", "*.cu.cc")))
    sources += sorted(glob.glob(os.path.join(HERE, "capi_*.cu.cc")))
    headers = glob.glob(os.path.join(ROOT, "tfsort", "cuda", "*.h"))
    headers += glob.glob(os.path.join(ROOT, "tfsort", "cuda", "*.cuh"))
    headers += glob.glob(os.path.join(ROOT, "tfsort", "cc", "kernels", "*.h"))
    flags = ["-x", "cu", "-std=c++17", "-O3", "-I" + ROOT, "-Xcompiler", "-fPIC"] + _arch_flags()
    # Objects are cached per compiler and flag set, so changing the architectures rebuilds.
    key = hashlib.sha1(" ".join([nvcc] + flags).encode()).hexdigest()[:10]
    obj_dir = os.path.join(OUT_DIR, "obj-" + key)
    os.makedirs(obj_dir, exist_ok=True)
    objects = []
    for src in sources:
        obj = os.path.join(obj_dir, os.path.basename(src) + ".o")
        if force or _newer(obj, [src] + headers):
            _run([nvcc, "-c", src, "-o", obj] + flags)
        objects.append(obj)
    stamp = os.path.join(OUT_DIR, "objects.txt")  # relink when the object set changes
    listing = "\n".join(objects)
    if not os.path.exists(stamp) or open(stamp).read() != listing:
        with open(stamp, "w") as f:
            f.write(listing)
    if force or _newer(LIB, objects + [stamp]):
        # nvcc links the CUDA runtime statically by default: the library needs only the driver.
        _run([nvcc, "-shared", "-o", LIB + ".tmp"] + objects + _arch_flags())
        os.replace(LIB + ".tmp", LIB)
    return LIB


if __name__ == "__main__":
    print(build(force="--force" in sys.argv[1:]))
