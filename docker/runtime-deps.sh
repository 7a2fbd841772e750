#!/bin/sh
# Runtime stage: the shared libraries the binary links (lua-cjson and llhttp are built in), CA
# certificates for https/wss upstreams, and the unprivileged user the container runs as.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends libluajit2-5.1-2 libuv1 libssl3 libwslay1 \
  libhiredis0.14 ca-certificates >/dev/null
rm -rf /var/lib/apt/lists/*
getent passwd relayhost >/dev/null || useradd --uid 1000 --user-group --no-create-home --home-dir /scripts relayhost
mkdir -p /scripts /config
chown 1000:1000 /scripts /config
chmod 755 /usr/local/lib/relayhost/healthcheck
