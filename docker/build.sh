#!/bin/sh
# Build stage: builds relayhost from SRC without tests and installs it under PREFIX.
set -eu
src=$1 prefix=$2
cmake -S "$src" -B /tmp/relayhost-build -DCMAKE_BUILD_TYPE=Release -DRELAYHOST_TESTS=OFF \
  -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
cmake --build /tmp/relayhost-build -j"$(nproc)" >/dev/null
cmake --install /tmp/relayhost-build >/dev/null
"$prefix/bin/relayhost" --version
