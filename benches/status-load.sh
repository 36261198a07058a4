#!/usr/bin/env bash
# Load test of the public status page: `runbook serve` (release build) against nginx
# serving the same bytes as static files, both on loopback, with wrk.
#
#   benches/status-load.sh            # or DURATION=10s CONNECTIONS="64 256" PATHS="/ /api/v2/summary.json"
#
# While a run is executing (its step sleeps, so the page shows an active maintenance),
# for each path and connection count: requests/s and p99 latency of runbook and of
# nginx, and the ratio runbook/nginx. Targets: runbook >= 50,000 req/s, >= 0.7 of nginx,
# p99 < 20 ms (each miss is marked with `!`). Installs wrk and nginx when missing
# (scripts/test-tools.sh). Everything it starts is stopped at the end.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

duration="${DURATION:-10s}"
connections="${CONNECTIONS:-64 256}"
paths="${PATHS:-/ /api/v2/summary.json}"
threads="${THREADS:-2}"
min_rps=50000
min_ratio=0.7
max_p99_ms=20

bash scripts/test-tools.sh wrk nginx >/dev/null
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
command -v curl >/dev/null || {
  echo "status-load: curl is needed" >&2
  exit 1
}

echo "building the release binary ..." >&2
cargo build --release --quiet
target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="$target_dir/release/runbook"

work="$(mktemp -d "${TMPDIR:-/tmp}/status-load.XXXXXX")"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    # Each was started in its own process group: stop the whole group.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  sleep 0.5
  for pid in "${pids[@]}"; do
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port nobody answers on.
free_port() {
  local port
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  echo "status-load: no free port" >&2
  exit 1
}

# Starts "$@" in its own process group, in the background; remembers its pid.
start() {
  local log="$1"
  shift
  setsid "$@" >"$log" 2>&1 </dev/null &
  pids+=("$!")
}

# Waits until `curl URL` prints something containing TEXT.
wait_for() {
  local url="$1" text="$2"
  for _ in $(seq 600); do
    if curl -fsS --max-time 2 "$url" 2>/dev/null | grep -qF -- "$text"; then
      return 0
    fi
    sleep 0.1
  done
  echo "status-load: $url never showed \`$text\`" >&2
  for log in "$work"/*.log; do
    echo "--- $log" >&2
    tail -20 "$log" >&2
  done
  return 1
}

store="sqlite://$work/state.db"
cat >"$work/load.yaml" <<'EOF'
runbook: load-test
title: Database upgrade under load
summary: We are upgrading the database; the shop is read-only meanwhile.
status_page: { components: [web, api, checkout] }
steps:
  - { id: prepare, kind: patch, title: Prepare the upgrade, run: { shell: "true" } }
  - { id: close, kind: close, title: Close the shop }
  - { id: upgrade, kind: patch, title: Upgrade the database, expected: 10m, timeout: 30m, run: { shell: "sleep 1800" } }
  - { id: reopen, kind: reopen, title: Reopen the shop }
EOF

rb_port="$(free_port)"
rb="http://127.0.0.1:$rb_port"
start "$work/serve.log" "$bin" serve --addr "127.0.0.1:$rb_port" --store "$store" --page-name "Load test"
wait_for "$rb/api/v2/summary.json" '"Load test"'
start "$work/execute.log" "$bin" execute "$work/load.yaml" --now --yes --store "$store"
wait_for "$rb/api/v2/summary.json" "Upgrade the database"

# The same bytes for nginx.
www="$work/www"
mkdir -p "$www/api/v2"
curl -fsS "$rb/" -o "$www/index.html"
curl -fsS "$rb/api/v2/summary.json" -o "$www/api/v2/summary.json"

ng_port="$(free_port)"
ng="http://127.0.0.1:$ng_port"
mkdir -p "$work/nginx"
{
  [ "$(id -u)" -eq 0 ] && echo "user root;"
  cat <<EOF
worker_processes auto;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  keepalive_timeout 65;
  sendfile on;
  tcp_nopush on;
  open_file_cache max=64 inactive=60s;
  open_file_cache_valid 60s;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  types {
    text/html html;
    application/json json;
  }
  charset utf-8;
  charset_types application/json;
  server {
    listen 127.0.0.1:$ng_port reuseport;
    root $www;
    # The headers runbook sends too, so both answer with about the same bytes.
    add_header Cache-Control "public, max-age=5";
    add_header Vary Accept-Encoding;
    add_header Access-Control-Allow-Origin "*";
    add_header Content-Security-Policy "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
    add_header X-Content-Type-Options nosniff;
    add_header Referrer-Policy strict-origin-when-cross-origin;
    location = / { try_files /index.html =404; }
    location / { try_files \$uri =404; }
  }
}
EOF
} >"$work/nginx/nginx.conf"
start "$work/nginx/stdout.log" "$nginx_bin" -c "$work/nginx/nginx.conf" -p "$work/nginx"
wait_for "$ng/api/v2/summary.json" '"Load test"'

# Both serve the same bytes.
for path in $paths; do
  a="$(curl -fsS "$rb$path" | sha256sum)"
  b="$(curl -fsS "$ng$path" | sha256sum)"
  [ "$a" = "$b" ] || echo "warning: $path differs between runbook and nginx" >&2
done

# Runs wrk; prints "REQUESTS_PER_S P99_MS ERRORS".
load() {
  local url="$1" conns="$2" out
  out="$(wrk -t"$threads" -c"$conns" -d"$duration" --latency "$url" 2>&1)" || {
    echo "status-load: wrk failed on $url:" >&2
    echo "$out" >&2
    return 1
  }
  echo "$out" >>"$work/wrk.log"
  echo "$out" | awk '
    function ms(v) {
      if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
      if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
      if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
      return v + 0
    }
    /Requests\/sec:/ { rps = $2 }
    $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { errors += $NF }
    /Socket errors:/ {
      for (i = 3; i <= NF; i++) { v = $i; gsub(/,/, "", v); if (v ~ /^[0-9]+$/) errors += v }
    }
    END { printf "%.0f %.2f %d\n", rps, p99, errors }'
}

echo "runbook: $rb  nginx: $ng  wrk -t$threads -d$duration, $(nproc) cores" >&2
printf '%-22s %5s  %-8s %12s %9s %7s %7s\n' path conns server 'req/s' 'p99 ms' errors ratio
misses=0
for path in $paths; do
  for conns in $connections; do
    read -r rb_rps rb_p99 rb_err < <(load "$rb$path" "$conns")
    read -r ng_rps ng_p99 ng_err < <(load "$ng$path" "$conns")
    ratio="$(awk -v a="$rb_rps" -v b="$ng_rps" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
    mark=""
    awk -v r="$rb_rps" -v q="$ratio" -v p="$rb_p99" -v e="$rb_err" \
      -v mr="$min_rps" -v mq="$min_ratio" -v mp="$max_p99_ms" \
      'BEGIN { exit !(r >= mr && q >= mq && p < mp && e == 0) }' || {
      mark="!"
      misses=$((misses + 1))
    }
    printf '%-22s %5s  %-8s %12s %9s %7s %7s\n' "$path" "$conns" runbook "$rb_rps" "$rb_p99" "$rb_err" "$ratio$mark"
    printf '%-22s %5s  %-8s %12s %9s %7s %7s\n' "$path" "$conns" nginx "$ng_rps" "$ng_p99" "$ng_err" ""
  done
done
echo
if [ "$misses" -eq 0 ]; then
  echo "all targets met (runbook >= $min_rps req/s, >= $min_ratio of nginx, p99 < $max_p99_ms ms)"
else
  echo "$misses of the runs missed a target (runbook >= $min_rps req/s, >= $min_ratio of nginx, p99 < $max_p99_ms ms, no errors): marked !"
fi
