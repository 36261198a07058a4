#!/bin/sh
# `sh benches/backup-verify.sh`: the cost of runbook's `backup` + `verify` on a real
# PostgreSQL database of generated rows with random text (SIZE_MB, default 500), against
# the bare commands a DBA would type (`pg_dump -Fc`, `createdb`, `pg_restore`, `dropdb`)
# in the same script on the same data; then the demo's end-to-end time.
# Target (issue 4): our overhead under 10%. Exits 1 when it is missed.
set -eu
cd "$(dirname "$0")/.."
.ci/start-postgres
cargo build --release --quiet
bin=$PWD/target/release/runbook
size_mb=${SIZE_MB:-500}
db=runbook_bench_$$
work=$(mktemp -d)
pg="-h 127.0.0.1 -U postgres"
cleanup() {
    dropdb $pg --if-exists "$db" 2>/dev/null || true
    dropdb $pg --if-exists "${db}_bare" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

createdb $pg "$db"
rows=$((size_mb * 1000))
echo "generating ~${size_mb} MB: $rows rows of random text ..."
psql $pg -d "$db" -q <<SQL
CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, created timestamptz NOT NULL);
CREATE TABLE events (
  id bigserial PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES customers (id),
  at timestamptz NOT NULL,
  payload text NOT NULL
);
INSERT INTO customers (name, created)
  SELECT md5(random()::text), now() - random() * interval '900 days'
  FROM generate_series(1, 10000);
-- About 1 kB of random hex per row: it compresses like real text, not like pgbench's.
INSERT INTO events (customer_id, at, payload)
  SELECT 1 + (random() * 9999)::int, now() - random() * interval '365 days',
         (SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 32) i)
  FROM generate_series(1, $rows) g;
CREATE INDEX events_at ON events (at);
ANALYZE;
SQL
echo "database size: $(psql $pg -d "$db" -tAc "SELECT pg_size_pretty(pg_database_size('$db'))")"

url="postgres://postgres@127.0.0.1:5432/$db"

# The bare commands.
t=$(now)
pg_dump $pg --format=custom --file="$work/bare.dump" "$db"
createdb $pg "${db}_bare"
pg_restore $pg --exit-on-error --dbname="${db}_bare" "$work/bare.dump"
dropdb $pg "${db}_bare"
bare=$(since "$t")

# The same through runbook.
cat > "$work/bench.yaml" <<YAML
runbook: bench-backup
steps:
  - id: backup
    kind: backup
    with: { database: "$url", to: "$work/runbook.dump" }
  - id: verify
    kind: verify
    with: { backup: "{{steps.backup.outputs.path}}" }
YAML
t=$(now)
(cd "$work" && "$bin" execute bench.yaml --now --yes --store "sqlite://$work/state.db" >/dev/null)
ours=$(since "$t")

ratio=$(awk -v a="$ours" -v b="$bare" 'BEGIN { printf "%.3f", a / b }')
printf 'bare pg_dump -Fc + createdb + pg_restore + dropdb: %.1f s\n' "$bare"
printf 'runbook backup + verify:                          %.1f s\n' "$ours"
printf 'ratio: %s (target < 1.10)\n' "$ratio"

# The demo, end to end, on a fresh directory.
demo=$(mktemp -d "$work/demo.XXXX")
mkdir -p "$demo/runbooks"
cp -r runbooks/demo.yaml runbooks/migrations "$demo/runbooks/"
t=$(now)
(cd "$demo" && "$bin" execute runbooks/demo.yaml --now --yes >/dev/null)
printf 'demo end to end (100,000 orders, every step): %.1f s\n' "$(since "$t")"

if awk -v r="$ratio" 'BEGIN { exit !(r > 1.10) }'; then
    echo "TARGET MISSED: overhead over 10%" >&2
    exit 1
fi
