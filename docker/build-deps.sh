#!/bin/sh
# Build stage: the compilers and -dev packages relayhost builds with (Debian 12 only).
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends build-essential cmake pkg-config ca-certificates \
  libluajit2-5.1-dev luajit2 libuv1-dev lua-cjson-dev libssl-dev node-llhttp libwslay-dev \
  libhiredis-dev >/dev/null
rm -rf /var/lib/apt/lists/*
