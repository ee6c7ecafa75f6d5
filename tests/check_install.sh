#!/usr/bin/env bash
# `cmake --install` into a temporary prefix, then build examples/embed_guard.c against the installed
# library through pkg-config (shared, then static) and guard one prompt with each binary on the tiny
# fixtures: what a program embedding the guard does.
# usage: check_install.sh BUILD_DIR SOURCE_DIR MODEL_DIR CLASSIFIER_DIR PROBE_PT
set -euo pipefail
build=$1 src=$2 model=$3 cls=$4 probe_pt=$5
tmp=$(mktemp -d /tmp/oc_install_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig:$tmp/prefix/lib/$(gcc -print-multiarch)/pkgconfig"
pkg-config --exists opencon
test "$(pkg-config --modversion opencon)" = "$(sed -n 's/^#define OPENCON_VERSION_STRING "\(.*\)"/\1/p' "$tmp/prefix/include/opencon/version.h")"
libdir=$(pkg-config --variable=libdir opencon)
objdump -p "$libdir/libopencon.so" | grep -q 'SONAME *libopencon\.so\.[0-9]'
cc -std=c11 -Wall -Wextra -Werror "$src/examples/embed_guard.c" $(pkg-config --cflags --libs opencon) -o "$tmp/embed_shared"
# static: libopencon.a, its Requires as shared libraries (libcurl's own static deps are not installed)
cc -std=c11 -Wall -Wextra -Werror "$src/examples/embed_guard.c" $(pkg-config --cflags opencon) -o "$tmp/embed_static" "$libdir/libopencon.a" \
  $(pkg-config --libs libcjson libcurl oniguruma libutf8proc) $(pkg-config --variable=libs_private opencon)
# a probe directory: the MVP's probe.pt with a config naming this model
mkdir -p "$tmp/probe"
cp "$probe_pt" "$tmp/probe/probe.pt"
printf '{"model_id": "%s", "layer": -4, "hidden_size": 64, "threshold": 0.65, "pause_threshold": 0.75, "probe_every_n_tokens": 4, "smoothing_window": 4, "use_chat_template": true}\n' "$model" > "$tmp/probe/config.json"
for exe in embed_shared embed_static; do
  out=$(LD_LIBRARY_PATH="$libdir" "$tmp/$exe" "$model" "$tmp/probe" "$cls" "How do I bake bread at home?" 2>"$tmp/err")
  grep -q '^libopencon ' "$tmp/err"
  last=$(printf '%s\n' "$out" | tail -n 1)
  case "$last" in
    '{"status":'*'"probe_calls":'*) ;;
    *) echo "$exe: no result JSON: $out" >&2; cat "$tmp/err" >&2; exit 1 ;;
  esac
  # a foreign probe is refused before any model loads, with the error's code
  printf '{"model_id": "org/other"}\n' > "$tmp/probe/config.json.other"
  mkdir -p "$tmp/other" && cp "$tmp/probe/probe.pt" "$tmp/other/" && cp "$tmp/probe/config.json.other" "$tmp/other/config.json"
  if LD_LIBRARY_PATH="$libdir" "$tmp/$exe" "$model" "$tmp/other" - hi 2>"$tmp/err"; then echo "$exe: foreign probe accepted" >&2; exit 1; fi
  grep -q 'error (invalid_input): the probe was trained for model_id "org/other"' "$tmp/err"
done
echo "install + pkg-config + embed_guard (shared and static): ok"
