# The classroom demo's "one room, four models" mode (demo/classroom.sh
# cluster): sourced by classroom.sh after its options, packages, build and
# cleanup are set up. It starts a redis-server on a free loopback port (no
# persistence), one server of each model of --models on ports PORT,
# PORT+1, ... sharing the room ClassRoom through it, the bots spread over
# them (named NAME@MODEL), and the tmux session: telnet into one server,
# the control pane (demo/cluster_control.py: every server, the room, keys
# 1-4 to SIGKILL a server), every server's log, the bots' status.
# classroom.sh's cleanup stops the servers, then Redis.

if [ "$port" = 0 ] || [ $((port + ${#models[@]} - 1)) -gt 65535 ]; then
  echo "classroom: cluster mode needs --port P with P..P+$((${#models[@]} - 1)) free" >&2
  exit 2
fi
room=ClassRoom

# Something already answers on this port of the loopback?
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for ((i = 0; i < ${#models[@]}; i++)); do
  if port_taken $((port + i)); then
    echo "classroom: port $((port + i)) is in use: pick others with --port" >&2
    exit 1
  fi
done

# Every child in a session of its own (a forking server's children are then
# found by session), and SIGTERM to it should this script die uncleanly.
# Always as `spawn PROGRAM ... &`: the background subshell becomes the
# program (exec), so that $! is its pid and a SIGKILL reaches it, not a
# wrapper whose death would stop it gracefully (--pdeathsig).
spawn() { exec setsid setpriv --pdeathsig TERM -- "$@"; }

# Redis on a free loopback port below the ephemeral range, nothing saved.
redis_port=""
start=$((20000 + RANDOM % 10000))
for ((try = 0; try < 50; try++)); do
  candidate=$((start + try))
  port_taken "$candidate" && continue
  spawn redis-server --port "$candidate" --bind 127.0.0.1 --save "" \
    --appendonly no --daemonize no --dir "$work" >"$work/redis.log" 2>&1 &
  redis_pid=$!
  for ((i = 0; i < 50; i++)); do
    [ "$(redis-cli -p "$candidate" ping 2>/dev/null)" = PONG ] && break
    kill -0 "$redis_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ "$(redis-cli -p "$candidate" ping 2>/dev/null)" = PONG ]; then
    redis_port=$candidate
    break
  fi
  stop_session "$redis_pid" # another program took the port: the next one
  redis_pid=""
done
if [ -z "$redis_port" ]; then
  echo "classroom: could not start redis-server:" >&2
  tail -n 5 "$work/redis.log" >&2
  exit 1
fi
url="redis://127.0.0.1:$redis_port"

# The servers; a model that repeats gets a numbered tag (evented, evented2).
ports=() tags=() specs=() logs=()
for ((i = 0; i < ${#models[@]}; i++)); do
  one=${models[$i]}
  tag=$one
  count=0
  for ((j = 0; j <= i; j++)); do [ "${models[$j]}" = "$one" ] && count=$((count + 1)); done
  [ "$count" -gt 1 ] && tag="$one$count"
  p=$((port + i))
  log="$work/server-$((i + 1))-$one.log"
  spawn "$build_dir/bin/chat-$one" "$room" "$p" --redis "$url" --lease "$lease" \
    --login-timeout 0 >"$work/server-$((i + 1)).out" 2>"$log" &
  pid=$!
  disown "$pid" # a server killed in the demo is news in the control pane, not here
  cluster_pids+=("$pid")
  for ((t = 0; t < 100; t++)); do
    grep -q "running on port" "$work/server-$((i + 1)).out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! grep -q "running on port" "$work/server-$((i + 1)).out" 2>/dev/null; then
    echo "classroom: chat-$one did not start:" >&2
    tail -n 5 "$log" >&2
    exit 1
  fi
  ports+=("$p")
  tags+=("$tag")
  logs+=("$log")
  specs+=(--server "$one:$pid:$p:$tag")
  echo "classroom: chat-$one (pid $pid) on port $p"
done

# A model that takes --redis but does not share the room yet serves a room
# of its own: say so (its bots and users see only each other).
joined=0
for ((t = 0; t < 50; t++)); do
  joined=$(redis-cli -p "$redis_port" zcard "c10k-chat:$room:servers" 2>/dev/null || echo 0)
  [ "$joined" -ge ${#models[@]} ] && break
  sleep 0.1
done
if [ "$joined" -lt ${#models[@]} ]; then
  echo "classroom: only $joined of ${#models[@]} servers joined the room through Redis;" \
    "a model without --redis support yet serves a room of its own" >&2
fi
echo "classroom: one room through $url (redis-server pid $redis_pid); logs in $work"

port_list=$(IFS=,; echo "${ports[*]}")
tag_list=$(IFS=,; echo "${tags[*]}")
python3 "$demo_dir/bots.py" --port "$port_list" --tags "$tag_list" \
  --bots "$bots" --rate "$rate" --wave "$wave" >"$work/bots.log" 2>&1 &
bots_pid=$!

# The room pane joins --telnet's server; after a disconnect (that server
# killed), Enter tries the next port that answers.
first=0
for ((i = 0; i < ${#models[@]}; i++)); do
  if [ "${models[$i]}" = "$telnet_model" ]; then first=$i; break; fi
done
order=()
for ((i = 0; i < ${#ports[@]}; i++)); do order+=("${ports[$(((first + i) % ${#ports[@]}))]}"); done
if command -v telnet >/dev/null; then
  client="telnet 127.0.0.1"
elif command -v nc >/dev/null; then
  client="nc 127.0.0.1"
else
  client="python3 '$demo_dir/chat_client.py' 127.0.0.1"
fi
cat >"$work/room.sh" <<EOF
# The room pane: joins the first of these ports that answers.
ports=(${order[*]})
join() {
  for p in "\${ports[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/\$p") 2>/dev/null; then
      echo "== joining the server on port \$p"
      $client "\$p"
      return
    fi
  done
  echo "no server answers on \${ports[*]}"
}
echo 'The room: pick a name, say something, NAMES lists everyone (on every server), QUIT leaves.'
join
echo; echo '(disconnected: Enter joins again, on the next server that answers)'
while read -r _; do join; echo; echo '(disconnected: Enter joins again)'; done
EOF

control=(python3 "$demo_dir/cluster_control.py" --redis-port "$redis_port"
  --room "$room" --lease "$lease" --bin-dir "$build_dir/bin" --log-dir "$work"
  --pidfile "$work/restarted.pids" "${specs[@]}")

if [ "$use_tmux" = 0 ]; then
  echo "classroom: join the room from another terminal: $client ${order[0]}"
  echo "classroom: keys 1-${#models[@]} kill a server, r then a number starts it again; Ctrl-C stops the demo"
  [ "$duration" -gt 0 ] && control+=(--duration "$duration")
  "${control[@]}" || true
  exit 0
fi

# Every server's log, each line tagged with its server.
{
  echo "echo '== the servers: $work/server-*.log'"
  for ((i = 0; i < ${#logs[@]}; i++)); do
    echo "tail -n 0 -F '${logs[$i]}' 2>/dev/null | sed -u 's/^/[${tags[$i]}] /' &"
  done
  echo "wait"
} >"$work/logs.sh"
printf -v control_cmd '%q ' "${control[@]}"

tmux -u new-session -d -s "$session" -x 200 -y 50 -n room "bash '$work/room.sh'"
tmux set-option -t "$session" -q mouse on
tmux set-option -t "$session" -q remain-on-exit on
tmux set-option -t "$session" -q status-right \
  "one room, ${#models[@]} servers  $bots bots  | control pane: 1-${#models[@]} kill | Ctrl-b d: end"
tmux set-option -t "$session" -q status-right-length 90
tmux split-window -t "$session:room" -h -l 90 "$control_cmd"
tmux split-window -t "$session:room.1" -v -l 16 "bash '$work/logs.sh'"
tmux split-window -t "$session:room.2" -v -l 5 \
  "echo '== bots: $work/bots.log'; tail -n 3 -F '$work/bots.log'"
tmux select-pane -t "$session:room.0"

started=$(date +%s)
if [ "$detach" = 0 ] && [ -t 0 ] && [ -t 1 ]; then
  if [ "$duration" -gt 0 ]; then
    (sleep "$duration"; tmux kill-session -t "$session" 2>/dev/null) &
  fi
  tmux -u attach-session -t "$session" || true
else
  echo "classroom: tmux session '$session' is running. Watch it with:"
  echo "    tmux attach -t $session      (Ctrl-b d ends the demo)"
  echo "  the control pane is the top right one: click it (or Ctrl-b o) and press 1-${#models[@]}"
  while tmux has-session -t "$session" 2>/dev/null; do
    if [ "$duration" -gt 0 ] && [ $(($(date +%s) - started)) -ge "$duration" ]; then
      break
    fi
    sleep 1
  done
fi
