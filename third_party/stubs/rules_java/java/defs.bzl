"""Offline stand-in for @rules_java//java:defs.bzl.

Nothing in tfsort is Java, but Bazel 4 parses @bazel_tools//tools/jdk (a registered toolchain
package) for every build, and that package loads this file. The Java rules are built in, so
each symbol re-exports the native rule.
"""

java_binary = native.java_binary
java_import = native.java_import
java_library = native.java_library
java_lite_proto_library = native.java_lite_proto_library
java_plugin = native.java_plugin
java_proto_library = native.java_proto_library
java_runtime = native.java_runtime
java_test = native.java_test
java_toolchain = native.java_toolchain
