#!/bin/sh
echo "bazel coverage is not available offline in this project" >&2
exit 1
