#!/usr/bin/env bash
# Fault isolation, shown: crash one worker of chat-forking (carol's child
# process) and one of chat-threaded (carol's thread), and print what every
# client saw. The forking room survives, carol departs; the threaded server
# dies with everyone in it. See demo/README.md for doing it by hand.
#
#   demo/fault_isolation.sh [--build-dir DIR] [--models forking,threaded]
set -euo pipefail
demo_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$demo_dir")
build_dir="$repo/build"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build_dir=${2:?--build-dir needs a folder}; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
. "$repo/scripts/packages.sh"
need_commands python3 || exit 1
for model in forking threaded; do
  if [ ! -x "$build_dir/bin/chat-$model" ]; then
    need_commands cmake:cmake cc:build-essential pkg-config:pkg-config || exit 1
    need_packages libevent-dev || exit 1
    echo "fault_isolation: building chat-$model in $build_dir"
    cmake -S "$repo" -B "$build_dir" >/dev/null
    cmake --build "$build_dir" --target "chat-$model" -j"$(nproc)" >/dev/null
  fi
done
ulimit -c 0 # the crashes are on purpose: no core files
exec python3 "$demo_dir/fault_isolation.py" --build-dir "$build_dir" "${args[@]+"${args[@]}"}"
