#!/usr/bin/env bash
# Debian 12 packages opencon builds and tests with.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends \
  build-essential cmake pkg-config ca-certificates \
  libopenblas-openmp-dev libcjson-dev libcurl4-openssl-dev libmicrohttpd-dev \
  libonig-dev libutf8proc-dev npm
