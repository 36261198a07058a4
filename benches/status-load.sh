#!/usr/bin/env bash
# Load test of the public status page: `runbook serve` (release build) against nginx
# serving the same bytes as static files, both on loopback, measured with wrk in one run.
#
#   benches/status-load.sh
#   ROUNDS=7 DURATION=10s CONNECTIONS="64 256" PATHS="/ /api/v2/summary.json" \
#     ENCODINGS="plain gzip" THREADS=1 WARMUP=1s KEEP=target/status-load benches/status-load.sh
#
# While a run is executing (its step sleeps, so the page shows an active maintenance),
# runbook's responses are saved as nginx's static files: each body, and its gzip body
# (as FILE.gz, served with `gzip_static on`), with the same headers (the ones runbook
# sends are copied into nginx's `add_header`). The sizes and sha256 of both servers'
# bodies are compared (a warning when they differ), and the header sizes printed.
#
# A case is a path x connection count x encoding (plain, or `Accept-Encoding: gzip`).
# Each case runs ROUNDS interleaved rounds (runbook, nginx, runbook, nginx ...) of
# `wrk -tTHREADS -cCONNS -dDURATION`; during each wrk run the server's CPU time is
# taken from /proc/PID/stat (utime+stime; for nginx the master and every worker).
# Per case: requests/s min and median, p99 min and median, CPU seconds per 100k
# requests (median), bytes per response on the wire (from wrk's rounded total, so about
# 1% off), errors, for each server; and the ratios runbook/nginx: throughput (median of
# the per-round ratios; the summary adds their range), CPU per request (median of the
# per-round ratios), p99 (of the medians). The load average is printed before and after:
# the numbers mean little on a busy machine.
#
# Targets (issue 15, item 3), for every case: throughput ratio >= 1.0, CPU per request
# ratio <= 1.0, runbook's median p99 <= nginx's, no errors (non-2xx/3xx responses or
# socket errors) on either server. Each miss is marked with `!` and listed at the end.
# Exits 0 when every target is met, 1 when one is missed, 2 when the bench cannot run
# or fails (a message says why; `bash scripts/test-tools.sh wrk nginx` installs the tools).
# Everything it starts is stopped, and its temporary directory removed, on exit
# (KEEP=DIR copies wrk's raw output, the servers' logs, nginx.conf and the files first).
set -Eeuo pipefail
# An unexpected failure anywhere exits 2 (1 is kept for a missed target).
trap 'exit 2' ERR

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

duration="${DURATION:-5s}"
rounds="${ROUNDS:-5}"
connections="${CONNECTIONS:-64 256}"
paths="${PATHS:-/ /api/v2/summary.json}"
encodings="${ENCODINGS:-plain gzip}"
threads="${THREADS:-1}"
warmup="${WARMUP:-1s}"
# Targets.
min_throughput_ratio=1.0
max_cpu_ratio=1.0
max_p99_ratio=1.0

die() {
  echo "status-load: $*" >&2
  exit 2
}

# Seconds in a wrk duration (`5`, `5s`, `2m`, `1h`).
seconds() {
  awk -v d="$1" 'BEGIN {
    if (d !~ /^[0-9]+(\.[0-9]+)?[smh]?$/) exit 1
    n = d + 0; u = d; sub(/^[0-9.]+/, "", u)
    printf "%g\n", n * (u == "m" ? 60 : u == "h" ? 3600 : 1)
  }'
}

[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive whole number, not \`$rounds\`"
[[ "$threads" =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive whole number, not \`$threads\`"
dur_s="$(seconds "$duration")" || die "DURATION must look like 5s, 2m or 1h, not \`$duration\`"
warm_s="$(seconds "$warmup")" || die "WARMUP must look like 1s or 0, not \`$warmup\`"
for conns in $connections; do
  [[ "$conns" =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be positive whole numbers, not \`$conns\`"
  [ "$conns" -ge "$threads" ] || die "each connection count must be at least THREADS ($threads)"
done
for enc in $encodings; do
  case "$enc" in plain | gzip) ;; *) die "ENCODINGS are \`plain\` and \`gzip\`, not \`$enc\`" ;; esac
done
for path in $paths; do
  [[ "$path" == /* ]] || die "PATHS must start with /, not \`$path\`"
done
[ "$rounds" -ge 5 ] || echo "status-load: warning: ROUNDS=$rounds; the targets ask for at least 5" >&2

# The tools.
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
nginx_bin="$(command -v nginx 2>/dev/null || true)"
[ -n "$nginx_bin" ] || { [ -x /usr/sbin/nginx ] && nginx_bin=/usr/sbin/nginx; } || missing+=(nginx)
if [ "${#missing[@]}" -gt 0 ]; then
  die "${missing[*]} missing: \`bash scripts/test-tools.sh wrk nginx\` installs them"
fi
for tool in curl sha256sum getconf pgrep setsid awk sort cargo; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is needed"
done
clk_tck="$(getconf CLK_TCK)"
cores="$(nproc)"

n() { wc -w <<<"$1" | tr -d ' '; }
cases=$(($(n "$paths") * $(n "$connections") * $(n "$encodings")))
estimate="$(awk -v c="$cases" -v r="$rounds" -v d="$dur_s" -v w="$warm_s" -v e="$(n "$encodings")" \
  'BEGIN { t = c * r * 2 * d + 2 * e * w; printf "%dm%02ds", t / 60, t % 60 }')"
echo "status-load: $cases cases x $rounds rounds x 2 servers x $duration (wrk -t$threads, $cores cores):" \
  "about $estimate of load, plus the build and setup" >&2
started_at="$(date +%s)"

echo "status-load: building the release binary ..." >&2
cargo build --release --quiet --bin runbook ||
  die "\`cargo build --release --bin runbook\` failed (if a file is being edited, retry in a minute)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="$target_dir/release/runbook"
[ -x "$bin" ] || die "no binary at $bin"

work="$(mktemp -d "${TMPDIR:-/tmp}/status-load.XXXXXX")"
groups=()
wrk_pid=""
cleanup() {
  local status=$? g
  trap - EXIT INT TERM
  [ -z "$wrk_pid" ] || kill -TERM "$wrk_pid" 2>/dev/null || true
  for g in "${groups[@]}"; do
    # Each was started in its own process group: stop the whole group.
    kill -TERM -- "-$g" 2>/dev/null || true
  done
  for _ in $(seq 30); do
    local alive=0
    for g in "${groups[@]}"; do
      kill -0 -- "-$g" 2>/dev/null && alive=1
    done
    [ "$alive" -eq 0 ] && break
    sleep 0.1
  done
  for g in "${groups[@]}"; do
    kill -KILL -- "-$g" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ] && [ -d "$work" ]; then
    mkdir -p "$KEEP" &&
      cp -r "$work"/*.log "$work"/nginx "$work"/www "$KEEP"/ 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A loopback port nobody answers on, below the ephemeral range (wrk's own connections
# take ports there, which a connect cannot see).
ephemeral_low="$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
[ "$ephemeral_low" -gt 11024 ] || ephemeral_low=32768
free_port() {
  local port
  for _ in $(seq 100); do
    port=$((10000 + RANDOM % (ephemeral_low - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  die "no free port"
}

# The process group of a pid (field 5 of /proc/PID/stat).
group_of() {
  local s
  s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  s="${s##*) }"
  read -r -a f <<<"$s"
  echo "${f[2]}"
}

# start LOG NAME CMD...: starts CMD in its own process group, in the background; sets
# `started` to the pid of the process whose executable is named NAME (setsid execs in
# place, or forks when it has to) and remembers its group, to stop it at the end.
started=""
start() {
  local log="$1" name="$2" pid exe child
  shift 2
  setsid "$@" >"$log" 2>&1 </dev/null &
  pid=$!
  groups+=("$pid")
  started=""
  for _ in $(seq 200); do
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
    if [ "${exe##*/}" = "$name" ]; then
      started="$pid"
    elif [ "${exe##*/}" = setsid ]; then
      child="$(pgrep -P "$pid" 2>/dev/null | head -1 || true)"
      exe="$(readlink "/proc/${child:-0}/exe" 2>/dev/null || true)"
      [ "${exe##*/}" != "$name" ] || started="$child"
    fi
    if [ -n "$started" ]; then
      local g
      g="$(group_of "$started")" && [ "$g" != "$pid" ] && groups+=("$g")
      return 0
    fi
    sleep 0.01
  done
  echo "status-load: $* did not start:" >&2
  tail -20 "$log" >&2
  exit 2
}

# Waits until `curl URL` prints something containing TEXT (or just answers 2xx, when
# TEXT is empty).
wait_for() {
  local url="$1" text="$2" log
  for _ in $(seq 600); do
    if [ -z "$text" ]; then
      curl -fsS --max-time 2 -o /dev/null "$url" 2>/dev/null && return 0
    elif curl -fsS --max-time 2 "$url" 2>/dev/null | grep -qF -- "$text"; then
      return 0
    fi
    sleep 0.1
  done
  echo "status-load: $url never showed \`$text\`" >&2
  for log in "$work"/*.log "$work"/nginx/*.log; do
    [ -f "$log" ] || continue
    echo "--- $log" >&2
    tail -20 "$log" >&2
  done
  exit 2
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
  - { id: upgrade, kind: patch, title: Upgrade the database, expected: 12h, timeout: 24h, run: { shell: "sleep 86400" } }
  - { id: reopen, kind: reopen, title: Reopen the shop }
EOF

rb_port="$(free_port)"
rb="http://127.0.0.1:$rb_port"
start "$work/serve.log" runbook "$bin" serve --addr "127.0.0.1:$rb_port" --store "$store" --page-name "Load test"
rb_pid="$started"
wait_for "$rb/api/v2/summary.json" '"Load test"'
start "$work/execute.log" runbook "$bin" execute "$work/load.yaml" --now --yes --store "$store"
wait_for "$rb/api/v2/summary.json" "Upgrade the database"
# Let the page settle on the running step before taking its bytes.
sleep 1

gz=(-H 'Accept-Encoding: gzip')
# The file nginx serves for a path.
file_of() {
  case "$1" in
    */) echo "${1}index.html" ;;
    *) echo "$1" ;;
  esac
}
# The headers runbook sends that nginx makes itself (or must not copy).
own_header() {
  case "$1" in
    content-type | content-length | content-encoding | etag | last-modified | date | \
      connection | keep-alive | transfer-encoding | server | accept-ranges) return 0 ;;
    *) return 1 ;;
  esac
}

# The same bytes for nginx: each body, its gzip body as FILE.gz, and an exact location
# with runbook's content type and headers.
www="$work/www"
mkdir -p "$www" "$work/nginx" "$work/resp"
locations=""
for path in $paths; do
  file="$(file_of "$path")"
  mkdir -p "$(dirname "$www$file")"
  curl -fsS -D "$work/resp/hdr" "$rb$path" -o "$www$file" ||
    die "runbook does not answer $path"
  tr -d '\r' <"$work/resp/hdr" >"$work/resp/hdr.txt"
  if curl -fsS -D "$work/resp/hdr.gz" "${gz[@]}" "$rb$path" -o "$www$file.gz.tmp" &&
    tr -d '\r' <"$work/resp/hdr.gz" | grep -qi '^content-encoding: *gzip'; then
    mv "$www$file.gz.tmp" "$www$file.gz"
  else
    rm -f "$www$file.gz.tmp"
    echo "status-load: warning: runbook does not gzip $path (so neither does nginx)" >&2
  fi
  # A HEAD (`curl -sI`) asking for gzip says so too.
  if [ -f "$www$file.gz" ] &&
    ! curl -fsSI "${gz[@]}" "$rb$path" | tr -d '\r' | grep -qi '^content-encoding: *gzip'; then
    echo "status-load: warning: runbook's HEAD $path with Accept-Encoding: gzip has no Content-Encoding: gzip" >&2
  fi
  content_type="$(awk -F': *' 'tolower($1) == "content-type" { print $2; exit }' "$work/resp/hdr.txt")"
  [ -n "$content_type" ] || content_type=application/octet-stream
  adds=""
  while IFS= read -r line; do
    name="${line%%:*}"
    value="${line#*:}"
    value="${value# }"
    name_lc="$(tr 'A-Z' 'a-z' <<<"$name")"
    [ -n "$name" ] && [ "$name" != "$line" ] || continue
    own_header "$name_lc" && continue
    case "$value" in
      *'$'* | *'"'* | *'\'*)
        echo "status-load: warning: header $name of $path not copied to nginx (quotes or \$)" >&2
        continue
        ;;
    esac
    adds+="      add_header $name \"$value\";"$'\n'
  done < <(tail -n +2 "$work/resp/hdr.txt")
  case "$path" in
    */) serve="try_files $file =404;" ;;
    *) serve="" ;;
  esac
  locations+="    location = $path {
      types { }
      default_type \"$content_type\";
$adds      $serve
    }
"
done

ng_port="$(free_port)"
ng="http://127.0.0.1:$ng_port"
{
  [ "$(id -u)" -eq 0 ] && echo "user root;"
  cat <<EOF
worker_processes auto;
worker_cpu_affinity auto;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events {
  worker_connections 4096;
  use epoll;
}
http {
  access_log off;
  log_not_found off;
  server_tokens off;
  keepalive_requests 1000000;
  keepalive_timeout 65;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  etag on;
  max_ranges 0;
  gzip off;
  gzip_static on;
  open_file_cache max=64 inactive=60s;
  open_file_cache_valid 60s;
  open_file_cache_min_uses 1;
  open_file_cache_errors on;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server {
    listen 127.0.0.1:$ng_port reuseport backlog=4096;
    root $www;
$locations
    location / { return 404; }
  }
}
EOF
} >"$work/nginx/nginx.conf"
"$nginx_bin" -t -q -c "$work/nginx/nginx.conf" -p "$work/nginx" 2>"$work/nginx/test.log" || {
  cat "$work/nginx/test.log" >&2
  die "nginx refuses the configuration ($work/nginx/nginx.conf above)"
}
start "$work/nginx/stdout.log" nginx "$nginx_bin" -c "$work/nginx/nginx.conf" -p "$work/nginx"
wait_for "$ng${paths%% *}" ''
ng_master="$started"
[ -s "$work/nginx/nginx.pid" ] && ng_master="$(cat "$work/nginx/nginx.pid")"

# The nginx processes whose CPU counts: the master and its workers.
nginx_pids() {
  echo "$ng_master"
  pgrep -P "$ng_master" || true
}
ng_workers="$(pgrep -P "$ng_master" | wc -l)"

# Both serve the same bytes, with about the same headers.
# response URL ENC: "HEADER_BYTES BODY_BYTES SHA256" of a GET; headers in $work/resp/h.
response() {
  local url="$1" enc="$2" sizes sum
  local h=()
  [ "$enc" = gzip ] && h=("${gz[@]}")
  sizes="$(curl -fsS ${h[@]+"${h[@]}"} -D "$work/resp/h" -o "$work/resp/b" \
    -w '%{size_header} %{size_download}' "$url")" || return 1
  sum="$(sha256sum <"$work/resp/b")"
  echo "$sizes ${sum%% *}"
}
header_names() {
  tr -d '\r' <"$1" | tail -n +2 | awk -F: 'NF > 1 { print tolower($1) }' | sort
}
declare -A body_sum
echo
echo "responses (GET; header and body bytes):"
printf '  %-24s %-5s %16s %16s  %s\n' path enc 'runbook hdr+body' 'nginx hdr+body' body
for path in $paths; do
  for enc in $encodings; do
    read -r rh rb_len rb_sum < <(response "$rb$path" "$enc") || die "runbook does not answer $path"
    header_names "$work/resp/h" >"$work/resp/rb.names"
    read -r nh ng_len ng_sum < <(response "$ng$path" "$enc") || die "nginx does not answer $path"
    header_names "$work/resp/h" >"$work/resp/ng.names"
    body_sum["$path $enc"]="$rb_sum"
    same="same sha256"
    if [ "$rb_sum" != "$ng_sum" ] || [ "$rb_len" != "$ng_len" ]; then
      same="DIFFERENT!"
      echo "status-load: warning: $path ($enc) bodies differ: runbook $rb_len B, nginx $ng_len B" >&2
    fi
    printf '  %-24s %-5s %9s+%-6s %9s+%-6s  %s\n' "$path" "$enc" "$rh" "$rb_len" "$nh" "$ng_len" "$same"
    only_rb="$(comm -23 "$work/resp/rb.names" "$work/resp/ng.names" | tr '\n' ' ')"
    only_ng="$(comm -13 "$work/resp/rb.names" "$work/resp/ng.names" | tr '\n' ' ')"
    [ -z "$only_rb" ] || echo "    headers only runbook sends: $only_rb"
    [ -z "$only_ng" ] || echo "    headers only nginx sends: $only_ng"
    if awk -v a="$rh" -v b="$nh" 'BEGIN { d = a - b; exit !(d > 64 || d < -64) }'; then
      echo "status-load: warning: $path ($enc) header sizes differ by more than 64 B: runbook $rh, nginx $nh" >&2
    fi
  done
done

# cpu_ticks PID...: utime+stime of the processes (all their threads), in clock ticks.
cpu_ticks() {
  local total=0 pid s
  for pid in "$@"; do
    s="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
    s="${s##*) }"
    read -r -a f <<<"$s"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

# load URL CONNS ENC DURATION PID...: one wrk run while counting the CPU of PIDs; prints
# "REQUESTS_PER_S P99_MS ERRORS REQUESTS CPU_S BYTES_PER_RESPONSE".
load() {
  local url="$1" conns="$2" enc="$3" dur="$4" before after
  shift 4
  local h=()
  [ "$enc" = gzip ] && h=("${gz[@]}")
  before="$(cpu_ticks "$@")"
  wrk -t"$threads" -c"$conns" -d"$dur" --latency ${h[@]+"${h[@]}"} "$url" >"$work/wrk.out" 2>&1 &
  wrk_pid=$!
  if ! wait "$wrk_pid"; then
    wrk_pid=""
    echo "status-load: wrk failed on $url:" >&2
    cat "$work/wrk.out" >&2
    exit 2
  fi
  wrk_pid=""
  after="$(cpu_ticks "$@")"
  {
    echo "=== $url c=$conns $enc"
    cat "$work/wrk.out"
  } >>"$work/wrk.log"
  awk -v cpu="$(((after - before)))" -v tck="$clk_tck" '
    function ms(v) {
      if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
      if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
      if (v ~ /m$/)  { sub(/m$/, "", v);  return v * 60000 }
      if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
      return v + 0
    }
    function bytes(v,   u) {
      u = v; sub(/^[0-9.]+/, "", u); v += 0
      return v * (u == "KB" ? 1024 : u == "MB" ? 1048576 : u == "GB" ? 1073741824 : u == "TB" ? 1099511627776 : 1)
    }
    /Requests\/sec:/ { rps = $2 }
    $1 == "99%" { p99 = ms($2) }
    / requests in / { reqs = $1; read = bytes($5) }
    /Non-2xx or 3xx responses:/ { errors += $NF }
    /Socket errors:/ {
      for (i = 3; i <= NF; i++) { v = $i; gsub(/,/, "", v); if (v ~ /^[0-9]+$/) errors += v }
    }
    END {
      if (reqs == 0 || rps == "") { print "0 0 1 0 0 0"; exit }
      printf "%.0f %.3f %d %d %.2f %.0f\n", rps, p99, errors, reqs, cpu / tck, read / reqs
    }' "$work/wrk.out"
}

# agg OP VALUE...: min, max or median.
agg() {
  local op="$1"
  shift
  printf '%s\n' "$@" | sort -g | awk -v op="$op" '
    { v[NR] = $1 }
    END {
      if (op == "min") { print v[1]; exit }
      if (op == "max") { print v[NR]; exit }
      m = int((NR + 1) / 2)
      print (NR % 2 ? v[m] : (v[m] + v[m + 1]) / 2)
    }'
}
# fmt FORMAT VALUE: printf through awk (floats).
fmt() { awk -v f="$1" -v v="$2" 'BEGIN { printf f, v }'; }

max_conns="$(printf '%s\n' $connections | sort -n | tail -1)"
first_path="${paths%% *}"
if [ "$warm_s" != 0 ]; then
  echo >&2
  echo "status-load: warming up ($warmup per server and encoding) ..." >&2
  for enc in $encodings; do
    load "$rb$first_path" "$max_conns" "$enc" "$warmup" "$rb_pid" >/dev/null
    load "$ng$first_path" "$max_conns" "$enc" "$warmup" $(nginx_pids) >/dev/null
  done
fi

echo
echo "runbook: $rb (pid $rb_pid)  nginx: $ng ($ng_workers workers)"
echo "wrk -t$threads -d$duration, $rounds interleaved rounds per case, $cores cores, CLK_TCK $clk_tck," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "targets: throughput runbook/nginx >= $min_throughput_ratio, CPU per request runbook/nginx <= $max_cpu_ratio," \
  "p99 runbook <= nginx (medians), no errors; a miss is marked !"
echo
row() { printf '%-22s %5s %-5s %-8s %9s %9s %8s %8s %10s %7s %6s\n' "$@"; }
row path conns enc server 'req/s min' 'req/s med' 'p99 min' 'p99 med' 'cpu s/100k' 'B/resp' errors
row '' '' '' '' '' '' '(ms)' '(ms)' '(median)' '' ''
misses=()
summary=()
for path in $paths; do
  for conns in $connections; do
    for enc in $encodings; do
      rb_rps=() ng_rps=() rb_p99=() ng_p99=() rb_cpu=() ng_cpu=() thr_r=() cpu_r=()
      rb_err=0 ng_err=0 rb_bpr=() ng_bpr=()
      for round in $(seq "$rounds"); do
        load "$rb$path" "$conns" "$enc" "$duration" "$rb_pid" >"$work/res"
        read -r a_rps a_p99 a_err a_req a_cpu a_bpr <"$work/res"
        load "$ng$path" "$conns" "$enc" "$duration" $(nginx_pids) >"$work/res"
        read -r b_rps b_p99 b_err b_req b_cpu b_bpr <"$work/res"
        a_c="$(awk -v c="$a_cpu" -v r="$a_req" 'BEGIN { printf "%.4f", (r > 0 ? c * 100000 / r : 0) }')"
        b_c="$(awk -v c="$b_cpu" -v r="$b_req" 'BEGIN { printf "%.4f", (r > 0 ? c * 100000 / r : 0) }')"
        rb_rps+=("$a_rps") ng_rps+=("$b_rps") rb_p99+=("$a_p99") ng_p99+=("$b_p99")
        rb_cpu+=("$a_c") ng_cpu+=("$b_c") rb_bpr+=("$a_bpr") ng_bpr+=("$b_bpr")
        rb_err=$((rb_err + a_err)) ng_err=$((ng_err + b_err))
        thr_r+=("$(awk -v a="$a_rps" -v b="$b_rps" 'BEGIN { printf "%.4f", (b > 0 ? a / b : 0) }')")
        cpu_r+=("$(awk -v a="$a_c" -v b="$b_c" 'BEGIN { printf "%.4f", (b > 0 ? a / b : 99) }')")
        printf 'status-load: %s c=%s %s round %s/%s: runbook %s req/s p99 %s ms cpu %s s/100k err %s | nginx %s req/s p99 %s ms cpu %s s/100k err %s\n' \
          "$path" "$conns" "$enc" "$round" "$rounds" "$a_rps" "$a_p99" "$a_c" "$a_err" "$b_rps" "$b_p99" "$b_c" "$b_err" >&2
      done
      thr="$(agg median "${thr_r[@]}")"
      cpu="$(agg median "${cpu_r[@]}")"
      rb_p99_med="$(agg median "${rb_p99[@]}")"
      ng_p99_med="$(agg median "${ng_p99[@]}")"
      p99r="$(awk -v a="$rb_p99_med" -v b="$ng_p99_med" 'BEGIN { printf "%.4f", (b > 0 ? a / b : (a > 0 ? 99 : 1)) }')"
      case_name="$path c=$conns $enc"
      m_thr="" m_cpu="" m_p99="" m_rb_err="" m_ng_err=""
      awk -v v="$thr" -v t="$min_throughput_ratio" 'BEGIN { exit !(v < t) }' && {
        m_thr="!"
        misses+=("$case_name: throughput runbook/nginx $(fmt %.2f "$thr") < $min_throughput_ratio")
      }
      awk -v v="$cpu" -v t="$max_cpu_ratio" 'BEGIN { exit !(v > t) }' && {
        m_cpu="!"
        misses+=("$case_name: CPU per request runbook/nginx $(fmt %.2f "$cpu") > $max_cpu_ratio")
      }
      awk -v a="$rb_p99_med" -v b="$ng_p99_med" -v t="$max_p99_ratio" 'BEGIN { exit !(a > b * t) }' && {
        m_p99="!"
        misses+=("$case_name: p99 runbook $rb_p99_med ms > nginx $ng_p99_med ms")
      }
      [ "$rb_err" -eq 0 ] || {
        m_rb_err="!"
        misses+=("$case_name: runbook had $rb_err errors")
      }
      [ "$ng_err" -eq 0 ] || {
        m_ng_err="!"
        misses+=("$case_name: nginx had $ng_err errors (the baseline is suspect)")
      }
      row "$path" "$conns" "$enc" runbook "$(fmt %.0f "$(agg min "${rb_rps[@]}")")" "$(fmt %.0f "$(agg median "${rb_rps[@]}")")" \
        "$(fmt %.2f "$(agg min "${rb_p99[@]}")")" "$(fmt %.2f "$rb_p99_med")" \
        "$(fmt %.3f "$(agg median "${rb_cpu[@]}")")" "$(fmt %.0f "$(agg median "${rb_bpr[@]}")")" "$rb_err$m_rb_err"
      row '' '' '' nginx "$(fmt %.0f "$(agg min "${ng_rps[@]}")")" "$(fmt %.0f "$(agg median "${ng_rps[@]}")")" \
        "$(fmt %.2f "$(agg min "${ng_p99[@]}")")" "$(fmt %.2f "$ng_p99_med")" \
        "$(fmt %.3f "$(agg median "${ng_cpu[@]}")")" "$(fmt %.0f "$(agg median "${ng_bpr[@]}")")" "$ng_err$m_ng_err"
      row '' '' '' 'rb/ng' '' "$(fmt %.2f "$thr")$m_thr" '' "$(fmt %.2f "$p99r")$m_p99" \
        "$(fmt %.2f "$cpu")$m_cpu" '' ''
      thr_range="$(fmt %.2f "$(agg min "${thr_r[@]}")")-$(fmt %.2f "$(agg max "${thr_r[@]}")")"
      summary+=("$(printf '%-22s %5s %-5s %10s %11s %10s %10s %7s' "$path" "$conns" "$enc" \
        "$(fmt %.2f "$thr")$m_thr" "$thr_range" "$(fmt %.2f "$cpu")$m_cpu" "$(fmt %.2f "$p99r")$m_p99" \
        "$((rb_err + ng_err))$m_rb_err$m_ng_err")")
    done
  done
done

# The page did not change under nginx's feet.
for path in $paths; do
  for enc in $encodings; do
    read -r _ _ now_sum < <(response "$rb$path" "$enc") || die "runbook no longer answers $path"
    [ "$now_sum" = "${body_sum["$path $enc"]}" ] ||
      echo "status-load: warning: runbook's $path ($enc) changed during the bench; nginx served the old bytes" >&2
  done
done
if grep -qiE 'panic|error' "$work/serve.log"; then
  echo "status-load: warning: runbook serve logged errors:" >&2
  grep -iE 'panic|error' "$work/serve.log" | tail -5 >&2
fi

elapsed=$(($(date +%s) - started_at))
echo
echo "summary (runbook/nginx; targets: throughput >= $min_throughput_ratio, cpu/request <= $max_cpu_ratio, p99 <= $max_p99_ratio, errors 0):"
printf '%-22s %5s %-5s %10s %11s %10s %10s %7s\n' path conns enc throughput '(range)' cpu/req p99 errors
printf '%s\n' "${summary[@]}"
echo
echo "total time $((elapsed / 60))m$(printf %02d $((elapsed % 60)))s, load average now $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "${#misses[@]}" -eq 0 ]; then
  echo "all targets met in $cases cases"
  exit 0
fi
echo "${#misses[@]} targets missed:"
printf '  ! %s\n' "${misses[@]}"
exit 1
