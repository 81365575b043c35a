#!/usr/bin/env bash
# CI stage 2 (called by .ci/run): the Bazel build and tests, offline (docs/bazel.md).
#
#   PYTHON_BIN_PATH  the Python whose TensorFlow to build against and to test with
#                    (default: the `python` on PATH, e.g. the CI virtual environment);
#                    it needs tensorflow and pytest.
#
# Installs Debian's bazel-bootstrap (Bazel 4.2.3) when no `bazel` is on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v bazel >/dev/null 2>&1; then
  echo "+ no bazel on PATH: installing Debian's bazel-bootstrap"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q bazel-bootstrap
fi

PYTHON_BIN_PATH="${PYTHON_BIN_PATH:-$(command -v python || echo python3)}"
export PYTHON_BIN_PATH
echo "+ PYTHON_BIN_PATH=${PYTHON_BIN_PATH}"
"${PYTHON_BIN_PATH}" -c "import pytest, tensorflow" 2>/dev/null || {
  echo "${PYTHON_BIN_PATH} cannot import tensorflow and pytest; set PYTHON_BIN_PATH" >&2
  exit 1
}

echo "+ bazel build //..."
bazel build //...
echo "+ bazel test //... --test_output=errors"
bazel test //... --test_output=errors
