#!/usr/bin/env bash
# Runs pytest under `bazel test` against the Bazel-built op library.
#
#   run_pytest.sh <runfiles path of _tfsort_ops.so> <test file>... [pytest args]
#
# The interpreter is the one tf_configure probed (TFSORT_PYTHON, from PYTHON_BIN_PATH), so the
# tests run with the TensorFlow the library was compiled against. tfsort is imported from the
# source tree in the runfiles (PYTHONPATH), and TFSORT_LIBRARY makes tfsort/_ops.py load the
# Bazel library instead of one built by setup.py.
set -euo pipefail

root="${TEST_SRCDIR:?run me with bazel test}/${TEST_WORKSPACE:?}"
lib="$1"
shift

export TFSORT_LIBRARY="${root}/${lib}"
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}"
export PYTHONDONTWRITEBYTECODE=1  # The runfiles are links into the source tree.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

cd "${root}"
exec "${TFSORT_PYTHON:-python3}" -m pytest -p no:cacheprovider --rootdir="${root}" -q \
  --junitxml="${XML_OUTPUT_FILE:-${TEST_TMPDIR}/junit.xml}" "$@"
