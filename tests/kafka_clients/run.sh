#!/usr/bin/env bash
# Kafka clients nobody here wrote, against three real brokers' Kafka
# listeners: kcat (Debian's package), confluent-kafka (librdkafka) and
# kafka-python (PyPI). Run by .ci/run after the tests; `bash
# tests/kafka_clients/run.sh` runs it alone.
#
# It installs the Python clients into a virtual environment under
# target/ (kept between runs) and kcat with apt-get when it is missing and
# apt-get may run; if a client cannot be had it says so in one line and
# goes on without it (SKIPPED), and if none can, it checks nothing.
# It builds the debug `brook`, starts three `brook serve` on free loopback
# ports with their own data directories, and stops them (by their PIDs)
# when it ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

cargo build -q -p brook
brook="${CARGO_TARGET_DIR:-$root/target}/debug/brook"

venv="${CARGO_TARGET_DIR:-$root/target}/kafka-clients-venv"
python=""
ready='import confluent_kafka, kafka.codec as c; assert c.has_snappy() and c.has_lz4() and c.has_zstd()'
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$ready" 2>/dev/null; then
  python="$venv/bin/python"
elif command -v python3 >/dev/null && python3 -m venv "$venv" 2>/dev/null \
  && "$venv/bin/pip" install -q confluent-kafka 'kafka-python[lz4,snappy,zstd]' 2>/dev/null; then
  python="$venv/bin/python"
else
  echo "kafka clients: SKIPPED confluent-kafka and kafka-python: no python3 with venv, or PyPI unreachable"
fi
if ! command -v kcat >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q kcat >/dev/null 2>&1 || true
  fi
fi
if ! command -v kcat >/dev/null; then
  echo "kafka clients: SKIPPED kcat: not installed and apt-get could not install it"
fi
if [ -z "$python" ] && ! command -v kcat >/dev/null; then
  echo "kafka clients: SKIPPED: no Kafka client could be installed; nothing checked"
  exit 0
fi

work=$(mktemp -d)
pids=()
stop() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT

# Ports: a base in the harness's range, well away from other runs'.
base=$((21000 + RANDOM % 8000))
head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$work/secret"
peers="1=127.0.0.1:$((base + 11)),2=127.0.0.1:$((base + 12)),3=127.0.0.1:$((base + 13))"
start_broker() {
  local id=$1
  "$brook" serve --id "$id" --listen "127.0.0.1:$((base + id))" --kafka-listen "127.0.0.1:$((base + 20 + id))" \
    --internal-listen "127.0.0.1:$((base + 10 + id))" --peers "$peers" --cluster-secret-file "$work/secret" \
    --data-dir "$work/broker-$id" >>"$work/broker-$id.log" 2>&1 &
  pids[$id]=$!
}
for id in 1 2 3; do start_broker "$id"; done
export BROOK_BOOTSTRAP="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
kafka="127.0.0.1:$((base + 21)),127.0.0.1:$((base + 22)),127.0.0.1:$((base + 23))"
# Until all three have registered (RF 3 needs them).
for _ in $(seq 1 100); do
  "$brook" topic create codecs --partitions 3 --replication-factor 3 >/dev/null 2>&1 && break
  sleep 0.3
done
"$brook" topic create order --partitions 1 --replication-factor 3

if command -v kcat >/dev/null; then
  listing=$(kcat -b "$kafka" -L)
  echo "$listing" | grep -q "3 brokers:" || { echo "kcat -L: $listing"; exit 1; }
  echo "$listing" | grep -q 'topic "codecs" with 3 partitions' || { echo "kcat -L: $listing"; exit 1; }
  for codec in none gzip snappy lz4 zstd; do
    seq 1 200 | sed "s/^/kcat-$codec-/" | kcat -b "$kafka" -P -t codecs -p 0 -z "$codec"
  done
  read=$(kcat -b "$kafka" -C -t codecs -p 0 -o beginning -e -q -f '%s\n' | grep -c '^kcat-')
  [ "$read" = 1000 ] || { echo "kcat read $read of 1000 records"; exit 1; }
  echo "kafka clients: kcat listed 3 brokers, produced and read 1000 records with each codec"
fi

if [ -n "$python" ]; then
  pids_arg="1=${pids[1]},2=${pids[2]},3=${pids[3]}"
  "$python" tests/kafka_clients/clients.py "$kafka" "$pids_arg"
fi
echo "kafka clients: passed"
