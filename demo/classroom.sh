#!/usr/bin/env bash
# The classroom demo: a chat server, a crowd of bots chatting in it, and a
# tmux session to watch it live (demo/README.md).
#
#   demo/classroom.sh MODEL [--bots N] [--rate LINES_PER_S] [options]
#   demo/classroom.sh cluster [--models LIST] [--lease S] [options]
#
#   MODEL            forking, threaded, evented or coroutine (chat-MODEL in
#                    build/bin)
#   cluster          one room, four models: a forking, a threaded, an
#                    evented and a coroutine server on ports PORT..PORT+3,
#                    sharing one room through a redis-server the demo
#                    starts; the bots spread over them (named NAME@MODEL),
#                    and a control pane kills a server (keys 1-4) so that
#                    the class sees its users depart after the lease
#   --models LIST    cluster: the servers, in order (default
#                    forking,threaded,evented,coroutine; a model may repeat)
#   --lease S        cluster: the servers' --lease (default 5)
#   --telnet MODEL   cluster: the server the room pane joins (default
#                    evented; Enter after a disconnect tries the next one)
#   --bots N         bots at the top of a wave (default 100)
#   --rate R         lines per second from all bots together (default 2)
#   --wave S         seconds per wave of leaving and coming back (default 60,
#                    0: a steady crowd)
#   --port P         the server's port (default 1234; 0: any free port)
#   --build-dir DIR  where bin/chat-MODEL is (default: build/, built if
#                    missing)
#   --duration S     stop everything after S seconds (default: when you
#                    leave the tmux session)
#   --detach         do not attach: print how to, and wait in the foreground
#   --no-tmux        no tmux: the live stats here; telnet from elsewhere
#
# The tmux session has four panes: telnet into the room (pick a name, type),
# the live stats of the server's processes/threads, memory and CPU (in
# cluster mode: the control pane, every server and the room), the server's
# log (every server's, tagged), and the bots' log. Leaving the session
# (Ctrl-b d), or Ctrl-C here, stops the servers, the bots and Redis.
# Nothing is left running.
#
# What it uses is installed when missing (scripts/packages.sh; as root or
# with sudo; CHAT_NO_INSTALL=1 only says what to install): python3, tmux,
# and telnet if it can be had. Without telnet it joins the room with nc,
# and without nc with demo/chat_client.py (Python only). Cluster mode also
# needs redis-server.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

demo_dir=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$demo_dir")
model=""
bots=100
rate=2
wave=60
port=1234
build_dir="$repo/build"
duration=0
detach=0
use_tmux=1
models_list=forking,threaded,evented,coroutine
lease=5
telnet_model=evented

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --bots) bots=${2:?--bots needs a number}; shift 2 ;;
    --rate) rate=${2:?--rate needs a number}; shift 2 ;;
    --wave) wave=${2:?--wave needs seconds}; shift 2 ;;
    --port) port=${2:?--port needs a number}; shift 2 ;;
    --build-dir) build_dir=${2:?--build-dir needs a folder}; shift 2 ;;
    --duration) duration=${2:?--duration needs seconds}; shift 2 ;;
    --detach) detach=1; shift ;;
    --no-tmux) use_tmux=0; shift ;;
    --models) models_list=${2:?--models needs a list}; shift 2 ;;
    --lease) lease=${2:?--lease needs seconds}; shift 2 ;;
    --telnet) telnet_model=${2:?--telnet needs a model}; shift 2 ;;
    -*) echo "classroom: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) if [ -n "$model" ]; then
         echo "classroom: one model only (got $model and $1)" >&2; exit 2
       fi
       model=${1#chat-}; shift ;;
  esac
done
case "$model" in
  forking|threaded|evented|coroutine|cluster) ;;
  "") usage >&2; exit 2 ;;
  *) echo "classroom: MODEL is forking, threaded, evented, coroutine or cluster, not '$model'" >&2
     exit 2 ;;
esac
models=("$model")
if [ "$model" = cluster ]; then
  IFS=, read -r -a models <<<"$models_list"
  for one in "${models[@]}"; do
    case "$one" in
      forking|threaded|evented|coroutine) ;;
      *) echo "classroom: --models: forking, threaded, evented or coroutine, not '$one'" >&2
         exit 2 ;;
    esac
  done
  if [ ${#models[@]} -lt 2 ] || [ ${#models[@]} -gt 9 ]; then
    echo "classroom: --models wants 2 to 9 servers" >&2; exit 2
  fi
  if ! [[ "$lease" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "classroom: --lease wants seconds, not '$lease'" >&2; exit 2
  fi
fi
for number in "$bots" "$port" "$duration"; do
  [[ "$number" =~ ^[0-9]+$ ]] || { echo "classroom: not a number: $number" >&2; exit 2; }
done
# What the demo uses: installed when missing (telnet is optional: nc or our
# own client stand in for it).
. "$repo/scripts/packages.sh"
wanted=(python3)
[ "$use_tmux" = 1 ] && wanted+=(tmux)
[ "$model" = cluster ] && wanted+=(redis-server:redis-server redis-cli:redis-tools setpriv:util-linux)
if ! need_commands "${wanted[@]}" -- telnet; then
  echo "classroom: cannot run without ${wanted[*]}" \
    "$([ "$use_tmux" = 1 ] && echo "(or use --no-tmux)")" >&2
  exit 1
fi

for one in "${models[@]}"; do
  [ "$one" = cluster ] && continue
  server_bin="$build_dir/bin/chat-$one"
  if [ ! -x "$server_bin" ]; then
    need_commands cmake:cmake cc:build-essential pkg-config:pkg-config || exit 1
    need_packages libevent-dev libhiredis-dev || exit 1
    echo "classroom: building chat-$one in $build_dir"
    cmake -S "$repo" -B "$build_dir" >/dev/null
    cmake --build "$build_dir" --target "chat-$one" -j"$(nproc)" >/dev/null
  fi
done
server_bin="$build_dir/bin/chat-$model"

# A process per connection (or a thread) needs descriptors and tasks.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ulimit -c 0 # the fault-isolation demo crashes workers: no core files

work=$(mktemp -d "${TMPDIR:-/tmp}/classroom.XXXXXX")
session="classroom-$$"
server_pid=""
bots_pid=""
cleaned=0
# Cluster mode: the servers (each in a session of its own, so that what a
# forking server leaves behind is found), the ones the control pane started
# again ($work/restarted.pids), and Redis.
cluster_pids=()
redis_pid=""

# Stops process $1 (SIGTERM, then SIGKILL after 5 s) and whatever is left
# in its session (a forking server's children).
stop_session() {
  local pid=$1 left
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  left=$(pgrep -s "$pid" 2>/dev/null || true)
  [ -z "$left" ] || kill -KILL $left 2>/dev/null || true
}

cleanup() {
  [ "$cleaned" = 1 ] && return
  cleaned=1
  trap - EXIT INT TERM
  if [ "$use_tmux" = 1 ] && tmux has-session -t "$session" 2>/dev/null; then
    tmux kill-session -t "$session" 2>/dev/null || true
  fi
  if [ -n "$bots_pid" ] && kill -0 "$bots_pid" 2>/dev/null; then
    kill -TERM "$bots_pid" 2>/dev/null || true # the bots say QUIT and go
    for _ in $(seq 50); do kill -0 "$bots_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$bots_pid" 2>/dev/null || true
  fi
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true # exits within 2 s (SPEC)
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  if [ "$model" = cluster ]; then
    local pids=("${cluster_pids[@]}") pid left=""
    if [ -f "$work/restarted.pids" ]; then
      while read -r pid; do pids+=("$pid"); done <"$work/restarted.pids"
    fi
    # The servers first, all at once (their users depart), then Redis.
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do stop_session "$pid"; done
    stop_session "$redis_pid"
    for pid in "${pids[@]}" $redis_pid; do left+="$(pgrep -s "$pid" 2>/dev/null || true) "; done
    left=$(echo $left)
    [ -z "$left" ] || echo "classroom: still running after the stop: $left" >&2
  fi
  wait 2>/dev/null || true
  if [ "$model" = cluster ]; then
    echo "classroom: stopped. Logs: $work/server-*.log, $work/redis.log, $work/bots.log"
  else
    echo "classroom: stopped. Logs: $work/server.log, $work/bots.log"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$model" = cluster ]; then
  . "$demo_dir/classroom_cluster.sh"
  exit 0
fi

# The server: its first line on stdout says the port (docs/PROTOCOL.md, section 1).
"$server_bin" ClassRoom "$port" --login-timeout 0 \
  >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do
  grep -q "running on port" "$work/server.out" 2>/dev/null && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if ! grep -q "running on port" "$work/server.out" 2>/dev/null; then
  echo "classroom: chat-$model did not start:" >&2
  cat "$work/server.log" >&2
  exit 1
fi
port=$(awk '/running on port/ { print $NF; exit }' "$work/server.out")
echo "classroom: chat-$model (pid $server_pid) on port $port; logs in $work"

python3 "$demo_dir/bots.py" --port "$port" --bots "$bots" --rate "$rate" \
  --wave "$wave" >"$work/bots.log" 2>&1 &
bots_pid=$!

# The client of the room pane: telnet, else nc, else our own.
if command -v telnet >/dev/null; then
  client="telnet 127.0.0.1 $port"
elif command -v nc >/dev/null; then
  client="nc 127.0.0.1 $port"
else
  client="python3 '$demo_dir/chat_client.py' 127.0.0.1 $port"
fi

if [ "$use_tmux" = 0 ]; then
  echo "classroom: join the room from another terminal: $client"
  echo "classroom: Ctrl-C stops the demo"
  args=("$server_pid" --port "$port")
  [ "$duration" -gt 0 ] && args+=(--duration "$duration")
  python3 "$demo_dir/stats.py" "${args[@]}" || true
  exit 0
fi

# The tmux session: telnet (left), stats (top right), server log and bots'
# log (bottom right). Each pane's command ends with the demo.
room="echo 'The room: pick a name, say something, NAMES lists everyone, QUIT leaves.'; \
$client; echo; echo '(disconnected: Enter reconnects)'; while read -r _; do $client; done"
tmux -u new-session -d -s "$session" -x 200 -y 50 -n room "bash -c \"$room\""
tmux set-option -t "$session" -q mouse on
tmux set-option -t "$session" -q remain-on-exit on
tmux set-option -t "$session" -q status-right \
  "chat-$model  $bots bots  $rate lines/s  | Ctrl-b d: end the demo"
tmux set-option -t "$session" -q status-right-length 80
tmux split-window -t "$session:room" -h -l 78 \
  "python3 '$demo_dir/stats.py' $server_pid --port $port"
tmux split-window -t "$session:room.1" -v -l 16 \
  "echo '== server log: $work/server.log'; tail -n 200 -F '$work/server.log'"
tmux split-window -t "$session:room.2" -v -l 5 \
  "echo '== bots: $work/bots.log'; tail -n 3 -F '$work/bots.log'"
tmux select-pane -t "$session:room.0"

started=$(date +%s)
if [ "$detach" = 0 ] && [ -t 0 ] && [ -t 1 ]; then
  if [ "$duration" -gt 0 ]; then
    # ends the session (and so the attach) when the time is up
    (sleep "$duration"; tmux kill-session -t "$session" 2>/dev/null) &
  fi
  tmux -u attach-session -t "$session" || true
else
  echo "classroom: tmux session '$session' is running. Watch it with:"
  echo "    tmux attach -t $session      (Ctrl-b d ends the demo)"
  # Wait until the session is gone, the time is up, or the server died.
  while tmux has-session -t "$session" 2>/dev/null; do
    if [ "$duration" -gt 0 ] && [ $(($(date +%s) - started)) -ge "$duration" ]; then
      break
    fi
    sleep 1
  done
fi
