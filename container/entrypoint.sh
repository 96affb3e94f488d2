#!/bin/sh
# The loopix image's entrypoint: checks what a node needs before it starts, so that a
# mistake in the mounts is one clear line, then replaces itself with `loopix` (PID 1, so
# SIGTERM from the runtime reaches the node, which stops gracefully).
#
#   loopix-entrypoint node --config /var/lib/loopix/node.toml
#   loopix-entrypoint directory serve --dir /var/lib/loopix/authority --listen 0.0.0.0:8000
#   loopix-entrypoint client ...   (any loopix command)
set -eu
LOOPIX=${LOOPIX_BIN:-/usr/local/bin/loopix}

fail() {
  echo "loopix-entrypoint: $*" >&2
  exit 64
}

if [ "${1:-}" = node ]; then
  config=
  prev=
  for arg in "$@"; do
    [ "$prev" = --config ] && config=$arg
    case "$arg" in --config=*) config=${arg#--config=} ;; esac
    prev=$arg
  done
  [ -n "$config" ] || fail "node: give --config (the node.toml in the mounted directory)"
  [ -f "$config" ] || fail "node: $config: no such file (mount the node's directory, e.g. -v /srv/loopix/mix-1:/var/lib/loopix)"
  [ -r "$config" ] || fail "node: $config: not readable by uid $(id -u) (chown the mounted directory to $(id -u))"
  dir=$(dirname "$config")
  [ -w "$dir" ] || fail "node: $dir: not writable by uid $(id -u) (the node keeps its lock, replay journals and store there)"
fi

exec "$LOOPIX" "$@"
