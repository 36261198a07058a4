#!/usr/bin/env bash
# An online migration under load, on the machine's PostgreSQL (127.0.0.1:5432, user
# postgres), with pgbench as the application.
#
#   benches/online-migrate.sh
#   ROWS=1000000 CLIENTS=4 LOCK_TIMEOUT=500ms KEEP=target/online-bench benches/online-migrate.sh
#
# A fresh database gets `orders` (ROWS rows, a bigint key) and `accounts` (1,000 rows,
# no primary key). The migration is the README's: add `total_cents` (NOT NULL, up
# `qty * price_cents`), rename `accounts.name`, change `orders.qty` to bigint, index
# (account_id, created_at).
#
# 1. start: CLIENTS pgbench clients read and write `orders` as the old version (search
#    path `public`, the old shape) during the whole `phase: start`; then half of them go
#    on as the old version and half as the new (`public_v1`, writing `total_cents`)
#    while it is checked. Reported: failed transactions and aborted clients (target 0),
#    the longest transaction (target at most LOCK_TIMEOUT + 50 ms: no write waits longer
#    than one lock wait), and the backfill's rows per second (target at least 50,000).
# 2. complete: the old clients are stopped (the old version is retired), the new ones go
#    on through `phase: complete`: 0 failures, and only the new shape is left.
# 3. abort: a second database like the first, `start` then `abort` under the old
#    workload: `pg_dump --schema-only` and a checksum of every table as before.
#
# Exits 0 when every target is met, 1 when one is missed, 2 when it cannot run. The
# databases are dropped on exit (KEEP=DIR keeps pgbench's logs and the runner's).
set -Eeuo pipefail
trap 'exit 2' ERR

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
rows="${ROWS:-1000000}"
clients="${CLIENTS:-4}"
lock_timeout="${LOCK_TIMEOUT:-500ms}"
lock_ms="${lock_timeout%ms}"
min_rate=50000

die() {
  echo "online-bench: $*" >&2
  exit 2
}
pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[ -x "$pgbin/pgbench" ] || die "pgbench is missing (Debian's postgresql-client)"
.ci/start-postgres >/dev/null 2>&1 || true
export PGHOST=127.0.0.1 PGUSER=postgres PGSSLMODE=disable
psql() { "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

echo "online-bench: building the release binary" >&2
cargo build --release --quiet || die "cargo build --release failed"
runbook="$root/target/release/runbook"

work="$(mktemp -d)"
tag="onlinebench_$$"
cleanup() {
  jobs -p | xargs -r kill 2>/dev/null || true
  for db in "${tag}_a" "${tag}_b"; do psql -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp -r "$work"/. "$KEEP"/ || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

make_db() { # NAME
  psql -d postgres -c "CREATE DATABASE $1" >/dev/null
  psql -d "$1" <<SQL >/dev/null
CREATE TABLE orders (id bigserial PRIMARY KEY, account_id int NOT NULL, qty int NOT NULL, price_cents int NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO orders (account_id, qty, price_cents) SELECT g % 997, 1 + g % 7, 100 + g % 1000 FROM generate_series(1, $rows) g;
CREATE TABLE accounts (id int NOT NULL, name text NOT NULL);
INSERT INTO accounts SELECT g, 'account ' || g FROM generate_series(1, 1000) g;
VACUUM ANALYZE;
SQL
}

mkdir -p "$work/migrations"
cat >"$work/migrations/0001_order_totals.yaml" <<'EOF'
operations:
  - add_column:
      table: orders
      column: { name: total_cents, type: bigint, nullable: false }
      up: "qty * price_cents"
  - rename_column: { table: accounts, from: name, to: display_name }
  - alter_column:
      table: orders
      column: qty
      type: bigint
      up: "qty::bigint"
      down: "least(qty, 2147483647)::int"
  - create_index: { table: orders, columns: [account_id, created_at] }
EOF
# The old version: reads a row, updates it, inserts one (search path `public`).
cat >"$work/old.sql" <<EOF
\set id random(1, $rows)
BEGIN;
SELECT qty, price_cents FROM orders WHERE id = :id;
UPDATE orders SET qty = qty % 7 + 1 WHERE id = :id;
INSERT INTO orders (account_id, qty, price_cents) VALUES (:id % 997, 2, 300);
END;
EOF
# The new version, through public_v1: writes total_cents itself.
cat >"$work/new.sql" <<EOF
\set id random(1, $rows)
BEGIN;
SET LOCAL search_path = public_v1;
SELECT qty, total_cents FROM orders WHERE id = :id;
UPDATE orders SET qty = qty % 7 + 1, total_cents = (qty % 7 + 1) * price_cents WHERE id = :id;
INSERT INTO orders (account_id, qty, price_cents, total_cents) VALUES (:id % 997, 3, 100, 300);
END;
EOF

runbook_file() { # DB PHASE
  cat <<EOF
runbook: online-bench-$2
steps:
  - id: m
    kind: migrate
    with: { database: "postgres://postgres@127.0.0.1:5432/$1", dir: migrations, phase: $2, lock_timeout: $lock_timeout }
EOF
}

# pgbench in the background until stopped: NAME SCRIPT DB CLIENTS
bench_start() {
  (cd "$work" && exec "$pgbin/pgbench" -n -c "$4" -j "$4" -T 3600 -l --log-prefix="$1" -f "$2" "$3" >"$work/$1.out" 2>&1) &
  echo $!
}
bench_stop() { # PID NAME
  kill -INT "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
# Over the pgbench logs of NAME: transactions, failures, the longest (ms), aborted clients.
bench_report() {
  local name="$1" n max failed aborted
  n="$(cat "$work/$name".[0-9]* 2>/dev/null | wc -l)"
  max="$(cat "$work/$name".[0-9]* 2>/dev/null | awk '$3 ~ /^[0-9]+$/ { if ($3 > m) m = $3 } END { printf "%.1f", m / 1000 }')"
  # A line cut short by stopping pgbench is not a failure; a failed one says so in
  # its third field.
  failed="$(cat "$work/$name".[0-9]* 2>/dev/null | awk 'NF >= 6 && $3 !~ /^[0-9]+$/' | wc -l)"
  aborted="$(grep -c "aborted" "$work/$name.out" || true)"
  echo "$n $failed $max $aborted"
}

missed=()
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "setting up ${tag}_a with $rows orders"
make_db "${tag}_a"
runbook_file "${tag}_a" start >"$work/start.yaml"
runbook_file "${tag}_a" complete >"$work/complete.yaml"
old_pid="$(bench_start old "$work/old.sql" "${tag}_a" "$clients")"
sleep 2
t0="$(date +%s.%N)"
(cd "$work" && "$runbook" execute start.yaml --now --yes --store "sqlite://$work/store.db" --run-id start >"$work/start.log" 2>&1) ||
  die "start failed: $(tail -3 "$work/start.log")"
t1="$(date +%s.%N)"
half=$((clients / 2))
[ "$half" -ge 1 ] || half=1
new_pid="$(bench_start new "$work/new.sql" "${tag}_a" "$half")"
sleep 3
bench_stop "$old_pid"
read -r old_n old_failed old_max old_aborted <<<"$(bench_report old)"
rate="$(grep -ho 'backfilled [0-9]* rows of `orders` ([0-9]* rows/s)' "$work"/logs/start/m.log 2>/dev/null | grep -o '([0-9]*' | tr -d '(' | tail -1 || true)"
[ -n "$rate" ] || rate="$(grep -rho 'backfilled [0-9]* rows of `orders` ([0-9]* rows/s)' "$work" | grep -o '([0-9]*' | tr -d '(' | tail -1)"
start_s="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
# Complete with the new version running.
(cd "$work" && "$runbook" execute complete.yaml --now --yes --store "sqlite://$work/store.db" --run-id complete >"$work/complete.log" 2>&1) ||
  die "complete failed: $(tail -3 "$work/complete.log")"
sleep 2
bench_stop "$new_pid"
read -r new_n new_failed new_max new_aborted <<<"$(bench_report new)"
shape="$(psql -d "${tag}_a" -tAc "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'orders'")"
old_left="$(psql -d "${tag}_a" -tAc "SELECT count(*) FROM pg_namespace WHERE nspname = 'public_v0'")"

# Abort on a second database, under the old workload.
echo "setting up ${tag}_b"
make_db "${tag}_b"
dump() { "$pgbin/pg_dump" --schema-only -d "$1" | grep -v '^\\\(un\)\?restrict'; }
sums() { psql -d "$1" -tAc "SELECT md5(string_agg(x, ',' ORDER BY x)) FROM (SELECT o::text AS x FROM orders o UNION ALL SELECT a::text FROM accounts a) s"; }
dump "${tag}_b" >"$work/before.sql"
sums_before="$(sums "${tag}_b")"
runbook_file "${tag}_b" start >"$work/start_b.yaml"
runbook_file "${tag}_b" abort >"$work/abort_b.yaml"
(cd "$work" && "$runbook" execute start_b.yaml --now --yes --store "sqlite://$work/store.db" --run-id start-b >"$work/start_b.log" 2>&1) ||
  die "start (b) failed: $(tail -3 "$work/start_b.log")"
(cd "$work" && "$runbook" execute abort_b.yaml --now --yes --store "sqlite://$work/store.db" --run-id abort-b >"$work/abort_b.log" 2>&1) ||
  die "abort (b) failed: $(tail -3 "$work/abort_b.log")"
dump "${tag}_b" >"$work/after.sql"
same_schema=no
cmp -s "$work/before.sql" "$work/after.sql" && same_schema=yes
same_data=no
[ "$(sums "${tag}_b")" = "$sums_before" ] && same_data=yes
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

mark() { if [ "$1" = ok ]; then echo " "; else echo "!"; fi; }
ok_if() { if awk "BEGIN { exit !($1) }"; then echo ok; else echo miss; fi; }
m_fail="$(ok_if "$old_failed + $old_aborted + $new_failed + $new_aborted == 0")"
m_stall="$(ok_if "$old_max <= $lock_ms + 50")"
m_rate="$(ok_if "${rate:-0} >= $min_rate")"
m_shape="$(ok_if "$old_left == 0")"
m_abort="$([ "$same_schema$same_data" = yesyes ] && echo ok || echo miss)"
[ "$m_fail" = ok ] || missed+=("failed transactions or aborted clients")
[ "$m_stall" = ok ] || missed+=("longest transaction $old_max ms > $lock_ms + 50 ms")
[ "$m_rate" = ok ] || missed+=("backfill ${rate:-?} rows/s < $min_rate")
[ "$m_shape" = ok ] || missed+=("the old schema is still there after complete")
[ "$m_abort" = ok ] || missed+=("abort left schema ($same_schema) or data ($same_data) changed")

echo
printf "  start: %ss for %s rows under %s old clients; backfill %s rows/s (target >= %s) %s\n" "$start_s" "$rows" "$clients" "${rate:-?}" "$min_rate" "$(mark "$m_rate")"
printf "  old version: %s transactions, %s failed, %s aborted clients, longest %s ms (target <= %s ms) %s\n" "$old_n" "$old_failed" "$old_aborted" "$old_max" "$((lock_ms + 50))" "$(mark "$m_stall")"
printf "  new version: %s transactions, %s failed, %s aborted clients, longest %s ms %s\n" "$new_n" "$new_failed" "$new_aborted" "$new_max" "$(mark "$m_fail")"
printf "  after complete: orders is (%s); public_v0 left: %s %s\n" "$shape" "$old_left" "$(mark "$m_shape")"
printf "  abort: schema the same: %s, data the same: %s %s\n" "$same_schema" "$same_data" "$(mark "$m_abort")"
if [ "${#missed[@]}" -gt 0 ]; then
  printf 'missed: %s\n' "${missed[@]}"
  exit 1
fi
echo "every target met"
