#!/usr/bin/env bash
# One node against three nodes over one NATS with JetStream (docs/cluster.md,
# "Measured"): fan-out 1 -> SUBS at RATE and 1 -> BIG_SUBS at BIG_RATE (the
# same deliveries per second), point-to-point pairs at QoS 0 and at QoS 1
# (acknowledged once JetStream holds the message), with every delivery
# crossing nodes in the cluster runs (--spread pub-on-first: publishers on
# n1, subscribers on n2 and n3), and the CPU time each process used (nodes,
# nats-server), so the cost of the NATS hop per message shows.
#
#   benches/cluster.sh   # ROUNDS=1 DURATION=5 SUBS=1000 RATE=200 BIG_SUBS=5000 BIG_RATE=40 PAIRS=200 PAIR_RATE=50
#
# Brokers and nats-server run pinned to CPU 0, the load tool to CPU 1 (a
# 2-core machine: in the cluster runs, the nodes and NATS share one core,
# so the sum of their CPU is what one message costs the system).
# Everything stays on 127.0.0.1. Results: target/cluster-bench/.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-1}
export DURATION=${DURATION:-5}
export WARMUP=${WARMUP:-2}
SUBS=${SUBS:-1000}
RATE=${RATE:-200}
BIG_SUBS=${BIG_SUBS:-5000}
BIG_RATE=${BIG_RATE:-40}
PAIRS=${PAIRS:-200}
PAIR_RATE=${PAIR_RATE:-50}
OUT=${OUT:-target/cluster-bench}
NATS_PORT=${NATS_PORT:-24222}
command -v nats-server >/dev/null || { echo "needs nats-server (apt-get install nats-server)" >&2; exit 1; }
cargo build --release -q
BIN=$PWD/target/release/starling
rm -rf "$OUT"; mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, in 1/100 s

start_node() { # NAME MQTT_PORT CLUSTER(0|1)
  local conf="$OUT/$1.toml"
  : > "$conf"
  if [ "$3" = 1 ]; then
    printf '[cluster]\nnats_urls = ["nats://127.0.0.1:%s"]\nnode = "%s"\n' "$NATS_PORT" "$1" >> "$conf"
  fi
  printf '[monitor]\ninterval_secs = 0\n[sys]\ninterval_secs = 0\n' >> "$conf"
  taskset -c 0 "$BIN" serve --config "$conf" --storage memory --mqtt-bind "127.0.0.1:$2" \
    --ws-bind 127.0.0.1:0 --http-bind 127.0.0.1:0 > "$OUT/$1.log" 2>&1 &
  pids+=($!)
  echo $!
}

wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

run() { # LABEL BROKERS PIDS... -- BENCH ARGS
  local label=$1 brokers=$2; shift 2
  local watch=(); while [ "$1" != -- ]; do watch+=("$1"); shift; done; shift
  local before=(); for p in "${watch[@]}"; do before+=("$(ticks "$p")"); done
  taskset -c 1 "$BIN" bench "$@" --broker "$brokers" --duration "$DURATION" --warmup "$WARMUP" --drain 3 \
    --json --quiet > "$OUT/$label.json"
  local cpu=""; for i in "${!watch[@]}"; do cpu+="$(( $(ticks "${watch[$i]}") - ${before[$i]} )) "; done
  python3 - "$OUT/$label.json" "$label" $cpu <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
r = json.loads(text[text.index("{"):])
ticks = [int(t) for t in sys.argv[3:]]
fan = (r["expected"] / r["published"]) if r["published"] else 0
# CPU was read around the whole run: connects, warm-up, measurement, drain.
# Messages in it: the publish rate over warm-up + measurement.
import os
published = r["publish_rate"] * (float(os.environ["WARMUP"]) + float(os.environ["DURATION"]))
cpu = " + ".join(f"{t/100:.2f}" for t in ticks)
per_msg = sum(ticks) * 10_000 / max(published, 1)
per_delivery = per_msg / max(fan, 1)
lat = r.get("latency_ms") or {}
print(f"{sys.argv[2]:<20} deliveries/s {r['deliveries_per_sec']:>8.0f} loss {r['loss_ratio']:.4f} "
      f"p50 {lat.get('p50', 0):6.2f} ms p99 {lat.get('p99', 0):6.2f} ms | CPU s {cpu} | "
      f"{per_msg:7.1f} us/message {per_delivery:6.2f} us/delivery")
EOF
}

for round in $(seq "$ROUNDS"); do
  echo "round $round"
  # One node.
  n=$(start_node single 21901 0); wait_port 21901
  run "fanout-single-$round" 127.0.0.1:21901 "$n" -- fanout --publishers 1 --subscribers "$SUBS" --rate "$RATE"
  run "fanout-big-single-$round" 127.0.0.1:21901 "$n" -- fanout --publishers 1 --subscribers "$BIG_SUBS" --rate "$BIG_RATE"
  run "p2p-single-$round" 127.0.0.1:21901 "$n" -- p2p --pairs "$PAIRS" --rate "$PAIR_RATE" --size 256
  run "p2p-qos1-single-$round" 127.0.0.1:21901 "$n" -- p2p --pairs "$PAIRS" --rate "$PAIR_RATE" --size 256 --qos 1
  kill "$n"; wait "$n" 2>/dev/null || true
  # Three nodes over one NATS (JetStream on): every delivery crosses.
  rm -rf "$OUT/nats-data"
  taskset -c 0 nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$OUT/nats-data" > "$OUT/nats.log" 2>&1 &
  nats=$!; pids+=($nats); wait_port "$NATS_PORT"
  n1=$(start_node n1 21911 1); n2=$(start_node n2 21912 1); n3=$(start_node n3 21913 1)
  wait_port 21911; wait_port 21912; wait_port 21913
  nodes=127.0.0.1:21911,127.0.0.1:21912,127.0.0.1:21913
  run "fanout-cluster-$round" "$nodes" "$n1" "$n2" "$n3" "$nats" -- \
    fanout --publishers 1 --subscribers "$SUBS" --rate "$RATE" --spread pub-on-first
  run "fanout-big-cluster-$round" "$nodes" "$n1" "$n2" "$n3" "$nats" -- \
    fanout --publishers 1 --subscribers "$BIG_SUBS" --rate "$BIG_RATE" --spread pub-on-first
  run "p2p-cluster-$round" "$nodes" "$n1" "$n2" "$n3" "$nats" -- \
    p2p --pairs "$PAIRS" --rate "$PAIR_RATE" --size 256 --spread pub-on-first
  run "p2p-qos1-cluster-$round" "$nodes" "$n1" "$n2" "$n3" "$nats" -- \
    p2p --pairs "$PAIRS" --rate "$PAIR_RATE" --size 256 --qos 1 --spread pub-on-first
  kill "$n1" "$n2" "$n3" "$nats"; wait "$n1" "$n2" "$n3" "$nats" 2>/dev/null || true
done
