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
* CUDA (docs/cuda.md): when a CUDA compiler is found, every tfsort/cuda/*.cu.cc is compiled
  by nvcc (sm_80, sm_90 and compute_90 PTX) into the same library, every .cc gets
  -DTFSORT_WITH_CUDA=1, and the CUDA runtime is linked statically with its symbols hidden,
  so the library still imports where there is no GPU, driver or libcudart. TFSORT_CUDA=0
  forces a CPU-only build; TFSORT_NVCC or CUDA_HOME pick the compiler; TFSORT_CUDA_ARCHS
  (e.g. "80;90") overrides the architectures.
"""

import glob
import hashlib
import json
import os
import shlex
import shutil
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


def find_nvcc():
    """Returns (nvcc path or None, reason). TFSORT_CUDA=0 forces a CPU-only build."""
    if os.environ.get("TFSORT_CUDA", "").strip().lower() in ("0", "false", "no", "off"):
        return None, "TFSORT_CUDA=0"
    candidates = []
    if os.environ.get("TFSORT_NVCC"):
        candidates.append(os.environ["TFSORT_NVCC"])
    if os.environ.get("CUDA_HOME"):
        candidates.append(os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc"))
    found = shutil.which("nvcc")
    if found:
        candidates.append(found)
    candidates.append("/usr/local/cuda/bin/nvcc")
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c, c
    return None, "no CUDA compiler found (set TFSORT_NVCC or CUDA_HOME to use one)"


def _cuda_home(nvcc):
    """Returns (toolkit root, libcudart_static.a) for nvcc, or (None, None).

    nvcc may be a wrapper script (e.g. /usr/local/bin/nvcc), so besides CUDA_HOME and the
    directory above nvcc, ask nvcc itself where its toolkit is (TOP in --dryrun output).
    """
    homes = []
    if os.environ.get("CUDA_HOME"):
        homes.append(os.environ["CUDA_HOME"])
    homes.append(os.path.dirname(os.path.dirname(nvcc)))
    try:
        proc = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                              capture_output=True, text=True, check=False, timeout=60)
        for line in (proc.stdout + proc.stderr).splitlines():
            if line.startswith("#$ TOP="):
                homes.append(os.path.normpath(line[len("#$ TOP="):].strip()))
    except (OSError, subprocess.SubprocessError):
        pass
    homes.append("/usr/local/cuda")
    for home in homes:
        if not os.path.exists(os.path.join(home, "include", "cuda_runtime_api.h")):
            continue
        for lib in ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib")):
            cand = os.path.join(home, lib, "libcudart_static.a")
            if os.path.exists(cand):
                return home, cand
    return None, None


def cuda_config():
    """Compiler, flags and link inputs of the CUDA part of the build, or None (CPU-only)."""
    nvcc, why = find_nvcc()
    if nvcc is None:
        print("tfsort: CPU-only build (%s)" % why, flush=True)
        return None
    home, static_rt = _cuda_home(nvcc)
    if static_rt is None:
        print("tfsort: CPU-only build (no CUDA toolkit with include/cuda_runtime_api.h and "
              "libcudart_static.a next to %s; set CUDA_HOME)" % nvcc, flush=True)
        return None
    include = os.path.join(home, "include")
    archs = os.environ.get("TFSORT_CUDA_ARCHS", "80;90").replace(",", ";").split(";")
    archs = [a.strip() for a in archs if a.strip()]
    gencode = []
    for a in archs:
        gencode += ["-gencode", "arch=compute_%s,code=sm_%s" % (a, a)]
    gencode += ["-gencode", "arch=compute_%s,code=compute_%s" % (archs[-1], archs[-1])]
    flags = (
        ["-x", "cu", "-std=c++17", "-O3", "-I" + ROOT, "-DTFSORT_WITH_CUDA=1"]
        + gencode
        + ["-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden"]
    )
    print("tfsort: CUDA build with %s (sm_%s + compute_%s PTX, static CUDA runtime)"
          % (nvcc, ", sm_".join(archs), archs[-1]), flush=True)
    return {
        "nvcc": nvcc,
        "include": include,
        "flags": flags,
        "link": [static_rt, "-Wl,--exclude-libs,libcudart_static.a", "-ldl", "-lrt",
                 "-lpthread"],
    }


def build_library(out_path, cfg=None, jobs=None, cuda=False):
    """Compiles every tfsort/cc/**/*.cc (and, with CUDA, tfsort/cuda/**/*.cu.cc) into one
    shared library at ``out_path``. ``cuda``: False to decide from the environment
    (cuda_config), or a cuda_config() result / None."""
    cfg = cfg or find_tensorflow()
    if cuda is False:
        cuda = cuda_config()
    cxx = os.environ.get("CXX", "g++")
    opt = os.environ.get("TFSORT_OPT_FLAGS", "-O3").split()
    cflags = (
        ["-std=c++17", "-fPIC", "-I" + ROOT]
        + opt
        + cfg["compile_flags"]
        + WARNING_FLAGS
        + ['-DTFSORT_TF_VERSION="%s"' % cfg["version"]]
    )
    if cuda:
        cflags += ["-DTFSORT_WITH_CUDA=1", "-isystem", cuda["include"]]
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

    cu_sources = _sources("cuda/**/*.cu.cc") if cuda else []
    if cuda:
        cu_key = hashlib.sha1(" ".join([cuda["nvcc"]] + cuda["flags"]).encode()).hexdigest()[:10]
        cu_dir = os.path.join(ROOT, "build", "cuobj-" + cu_key)
        os.makedirs(cu_dir, exist_ok=True)
        cu_headers = headers + _sources("cuda/**/*.cuh")

    def compile_cu(src):
        rel = os.path.relpath(src, ROOT).replace(os.sep, "_")
        obj = os.path.join(cu_dir, rel + ".o")
        if _newer(obj, [src] + cu_headers):
            _run([cuda["nvcc"], "-c", src, "-o", obj] + cuda["flags"])
        return obj

    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2) as pool:
        cu_objects = list(pool.map(compile_cu, cu_sources))
        objects = list(pool.map(compile_one, sources)) + cu_objects

    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + ".tmp"
    link = cuda["link"] if cuda else []
    _run([cxx, "-shared", "-o", tmp] + objects + cfg["link_flags"] + link + ["-Wl,-O1"])
    os.replace(tmp, out_path)
    cfg["with_cuda"] = bool(cuda)
    write_build_info(os.path.dirname(os.path.abspath(out_path)), cfg)
    return out_path


FAST_PATH_SOURCE = os.path.join("tfsort", "pyext", "eager_fast_path.cc")


def build_fast_path(out_path, cfg):
    """Compiles the CPython extension tfsort._eager_fast_path (docs/design_notes.md, "The
    eager fast path in C++") to ``out_path``. It links against TensorFlow's own Python
    library and C API, so like the op library it only works with the TensorFlow it was built
    against. Optional: without it (no Python headers, another layout of TensorFlow's
    libraries) tfsort runs the same ops through the Python path, ~27 us slower per small eager
    forward + backward. Returns whether it was built."""
    import sysconfig  # noqa: PLC0415

    src = os.path.join(ROOT, FAST_PATH_SOURCE)
    tf_python = os.path.join(cfg["lib"], "python")
    include = sysconfig.get_paths()["include"]
    missing = [p for p in (os.path.join(tf_python, "lib_pywrap_tensorflow_common.so"),
                           os.path.join(cfg["lib"], "libtensorflow_cc.so.2"),
                           os.path.join(include, "Python.h")) if not os.path.exists(p)]
    if missing:
        print("tfsort: not building the C++ eager fast path (missing %s); eager calls take "
              "the Python path" % ", ".join(missing), flush=True)
        return False
    if not _newer(out_path, [src, __file__]):
        return True
    cxx = os.environ.get("CXX", "g++")
    tmp = out_path + ".tmp"
    cmd = ([cxx, "-shared", "-fPIC", "-O2", "-std=c++17", "-I" + include, src, "-o", tmp]
           + cfg["compile_flags"] + WARNING_FLAGS
           + ["-L" + tf_python, "-l:lib_pywrap_tensorflow_common.so",
              "-L" + cfg["lib"], "-l:libtensorflow_cc.so.2"]
           + cfg["link_flags"] + ["-Wl,-O1"])
    try:
        _run(cmd)
    except (OSError, subprocess.CalledProcessError) as e:
        print("tfsort: the C++ eager fast path failed to build (%s); eager calls take the "
              "Python path" % e, flush=True)
        return False
    os.replace(tmp, out_path)
    return True


def write_build_info(package_dir, cfg):
    """Records the TensorFlow the library was compiled against (checked by tfsort/_ops.py)
    and whether the CUDA kernels and the C++ eager fast path were built."""
    with open(os.path.join(package_dir, "_build_info.py"), "w") as f:
        f.write(
            "# Generated by setup.py: the TensorFlow this library was compiled against.\n"
            "TF_VERSION = %r\nCUDA = %r\nFAST_PATH = %r\n"
            % (cfg["version"], bool(cfg.get("with_cuda")), bool(cfg.get("fast_path")))
        )


class BuildTFSortOps(build_ext):
    """build_ext that produces tfsort/_tfsort_ops.so with TensorFlow's own flags, then the
    optional extension tfsort._eager_fast_path."""

    def get_ext_filename(self, fullname):
        # Called with the full dotted name and with its last component alone.
        if fullname.split(".")[-1] == "_tfsort_ops":
            return os.path.join(*fullname.split(".")[:-1], LIB_NAME)
        return super().get_ext_filename(fullname)

    def build_extension(self, ext):
        if getattr(self, "_tf_cfg", None) is None:
            self._tf_cfg = find_tensorflow()
        path = self.get_ext_fullpath(ext.name)
        if ext.name == "tfsort._tfsort_ops":
            build_library(path, self._tf_cfg, jobs=self.parallel or None)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._tf_cfg["fast_path"] = build_fast_path(path, self._tf_cfg)
            write_build_info(os.path.dirname(os.path.abspath(path)), self._tf_cfg)

    def run(self):
        super().run()
        if getattr(self, "_tf_cfg", None) and (self.inplace or getattr(self, "editable_mode", 0)):
            # setuptools copies only the library itself back into the source tree.
            write_build_info(os.path.join(ROOT, "tfsort"), self._tf_cfg)


if __name__ == "__main__":
    setup(
        # Built in this order (the second one records both in _build_info.py).
        ext_modules=[Extension("tfsort._tfsort_ops", sources=[]),
                     Extension("tfsort._eager_fast_path", sources=[])],
        cmdclass={"build_ext": BuildTFSortOps},
    )
