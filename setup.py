"""Build script for tfsort: compiles tfsort/_tfsort_ops.so against the installed TensorFlow.

Why a hand-written build step instead of a plain setuptools Extension:

* The op library must be compiled with the exact flags of the TensorFlow that will load it
  (``tf.sysconfig.get_compile_flags()`` / ``get_link_flags()``). TensorFlow is therefore *not* a
  build requirement in pyproject.toml (that would download a second ~600 MB TensorFlow into
  pip's isolated build environment). Instead :func:`find_tensorflow` asks the Python
  interpreter of the target environment, with pip's isolation variables removed, for its
  TensorFlow. ``pip install .`` and ``pip install -e .`` both work without
  ``--no-build-isolation``, as long as tensorflow is installed first.
* Objects are cached per flag set under build/, so ``python setup.py build_ext --inplace``
  during development recompiles only what changed, two files at a time.
* The library records the TensorFlow version it was built against in tfsort/_build_info.py;
  tfsort/_ops.py refuses to load it under another version and says how to rebuild.
"""

import glob
import hashlib
import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
LIB_NAME = "_tfsort_ops.so"
WARNING_FLAGS = ["-Wno-deprecated-declarations", "-Wno-interference-size"]

_PROBE = r"""
import json, tensorflow as tf
info = tf.sysconfig.get_build_info()
print("TFSORT_PROBE" + json.dumps({
    "version": tf.__version__,
    "compile_flags": tf.sysconfig.get_compile_flags(),
    "link_flags": tf.sysconfig.get_link_flags(),
    "include": tf.sysconfig.get_include(),
    "lib": tf.sysconfig.get_lib(),
    "cuda_version": info.get("cuda_version", ""),
}))
"""


def find_tensorflow():
    """Returns the build configuration of the TensorFlow in the target environment.

    Tries the interpreter as it is first (``--no-build-isolation`` builds, Bazel's
    PYTHON_BIN_PATH), then without pip's isolation variables (PYTHONPATH points at the
    isolated overlay, PYTHONNOUSERSITE hides user site-packages), which exposes the
    environment pip is installing into.
    """
    python = os.environ.get("PYTHON_BIN_PATH", sys.executable)
    base = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    stripped = {k: v for k, v in base.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    errors = []
    for env in (base, stripped):
        proc = subprocess.run(
            [python, "-c", _PROBE], env=env, capture_output=True, text=True, check=False
        )
        for line in proc.stdout.splitlines():
            if line.startswith("TFSORT_PROBE"):
                return json.loads(line[len("TFSORT_PROBE"):])
        errors.append(proc.stderr.strip().splitlines()[-1:] or ["(no output)"])
    raise RuntimeError(
        "tfsort: could not import TensorFlow with %s (%s). Install it first:\n"
        "    pip install tensorflow==2.21.0\nthen build tfsort again." % (python, errors[-1][0])
    )


def _sources(pattern):
    return sorted(glob.glob(os.path.join(ROOT, "tfsort", pattern), recursive=True))


def _newer(target, deps):
    if not os.path.exists(target):
        return True
    t = os.path.getmtime(target)
    return any(os.path.getmtime(d) > t for d in deps)


def _run(cmd):
    print(" ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.check_call(cmd)


def build_library(out_path, cfg=None, jobs=None):
    """Compiles every tfsort/cc/**/*.cc into one shared library at ``out_path``."""
    cfg = cfg or find_tensorflow()
    cxx = os.environ.get("CXX", "g++")
    opt = os.environ.get("TFSORT_OPT_FLAGS", "-O3").split()
    cflags = (
        ["-std=c++17", "-fPIC", "-I" + ROOT]
        + opt
        + cfg["compile_flags"]
        + WARNING_FLAGS
        + ['-DTFSORT_TF_VERSION="%s"' % cfg["version"]]
    )
    sources = _sources("cc/**/*.cc")
    headers = _sources("cc/**/*.h") + _sources("cuda/**/*.h")
    key = hashlib.sha1(" ".join([cxx] + cflags).encode()).hexdigest()[:10]
    obj_dir = os.path.join(ROOT, "build", "obj-" + key)
    os.makedirs(obj_dir, exist_ok=True)

    def compile_one(src):
        rel = os.path.relpath(src, ROOT).replace(os.sep, "_")
        obj = os.path.join(obj_dir, rel + ".o")
        if _newer(obj, [src] + headers):
            _run([cxx, "-c", src, "-o", obj] + cflags)
        return obj

    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2) as pool:
        objects = list(pool.map(compile_one, sources))

    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + ".tmp"
    _run([cxx, "-shared", "-o", tmp] + objects + cfg["link_flags"] + ["-Wl,-O1"])
    os.replace(tmp, out_path)
    write_build_info(os.path.dirname(os.path.abspath(out_path)), cfg)
    return out_path


def write_build_info(package_dir, cfg):
    """Records the TensorFlow the library was compiled against (checked by tfsort/_ops.py)."""
    with open(os.path.join(package_dir, "_build_info.py"), "w") as f:
        f.write(
            "# Generated by setup.py: the TensorFlow this library was compiled against.\n"
            "TF_VERSION = %r\nCUDA = False\n" % cfg["version"]
        )


class BuildTFSortOps(build_ext):
    """build_ext that produces tfsort/_tfsort_ops.so with TensorFlow's own flags."""

    def get_ext_filename(self, fullname):
        return os.path.join(*fullname.split(".")[:-1], LIB_NAME)

    def build_extension(self, ext):
        self._tf_cfg = find_tensorflow()
        build_library(self.get_ext_fullpath(ext.name), self._tf_cfg, jobs=self.parallel or None)

    def run(self):
        super().run()
        if getattr(self, "_tf_cfg", None) and (self.inplace or getattr(self, "editable_mode", 0)):
            # setuptools copies only the library itself back into the source tree.
            write_build_info(os.path.join(ROOT, "tfsort"), self._tf_cfg)


if __name__ == "__main__":
    setup(
        ext_modules=[Extension("tfsort._tfsort_ops", sources=[])],
        cmdclass={"build_ext": BuildTFSortOps},
    )
