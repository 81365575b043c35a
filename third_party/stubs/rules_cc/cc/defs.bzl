"""Offline stand-in for @rules_cc//cc:defs.bzl.

In Bazel 4 the C++ rules are built in; @bazel_tools loads them through this file, so each
symbol simply re-exports the native rule.
"""

cc_binary = native.cc_binary
cc_import = native.cc_import
cc_library = native.cc_library
cc_proto_library = native.cc_proto_library
cc_test = native.cc_test
cc_toolchain = native.cc_toolchain
cc_toolchain_suite = native.cc_toolchain_suite
objc_import = native.objc_import
objc_library = native.objc_library
