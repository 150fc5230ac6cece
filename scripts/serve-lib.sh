# Sourced by the scripts that drive `moe serve`: installs the openai client when missing, and
# start_server ARGS... starts `$moe serve` on a free port with ARGS, sets $port and $server,
# waits for /health, and stops the server when the script exits.
python3 -c "import openai" 2>/dev/null || pip install -q openai >/dev/null 2>&1

start_server() {
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  server_log=$(mktemp)
  "$moe" serve --port "$port" "$@" > "$server_log" 2>&1 &
  server=$!
  trap 'kill $server 2>/dev/null; rm -f "$server_log"' EXIT
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return
    kill -0 $server 2>/dev/null || { cat "$server_log"; exit 1; }
    sleep 0.1
  done
  echo "moe serve did not start" >&2; exit 1
}
