#!/usr/bin/env bash
# Side-by-side comparison of starling with Mosquitto, nats-server (MQTT) and
# rumqttd on this machine, using `starling bench` as the load for all of them.
#
#   benches/compare.sh                       # every scenario, 3 rounds
#   ROUNDS=5 SCENARIOS="fanout1k p2p500" benches/compare.sh
#
# `starling` runs the shipped config.toml (sled storage, the topic classes in
# topics/ on; the scenarios' topics are neutral, outside every class);
# `starling-mem` is the same with `--storage memory`, as an extra row;
# `starling-sysalloc` (add it to BROKERS) the shipped config on a build with
# the system allocator instead of mimalloc, for the allocator A/B;
# `starling-base` the shipped config on the binary at $STARLING_BASE
# (default target/release/starling-base), for an A/B against another commit.
# fanout5k and fanout1kr are fan-out at a fixed rate (1 M deliveries/s each),
# for latency. The
# ws* scenarios run MQTT over WebSocket (Mosquitto's websockets listener,
# nats-server's websocket listener at /mqtt; rumqttd is built without it and
# skipped), the proto* ones starling.v1 (starling only). durable500 is QoS 1
# with persistent sessions (starling on sled, Mosquitto with persistence on,
# nats-server's JetStream-backed MQTT sessions), with the disk's plain fsync
# loop (benches/fsync_loop.py) and starling's messages per fsync beside it.
# vehicles10k runs on the location class (conflation, retained on sled),
# danmaku5k on the danmaku class (rate limits, sampling, drop-oldest
# outboxes; gifts from a `server`-role user must all arrive); class rows have
# no peer and run on starling only. tls* run MQTT over TLS (a throw-away CA
# made with openssl; starling's [tls] listener, Mosquitto's cafile listener).
#
# Method (docs/performance.md): each run starts the broker fresh, pinned to
# CPU 0 with taskset; the load tool runs pinned to CPU 1. Rounds interleave the
# brokers (A B C D, A B C D, ...). Results (one JSON per run) and a summary
# with medians and ratios go to target/compare/. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
BROKERS=${BROKERS:-"starling starling-mem mosquitto nats rumqttd"}
SCENARIOS=${SCENARIOS:-"fanout1k fanout5k fanout1kr fanin2k p2p500 p2p500q1 durable500 durable500r idle idlebare wsfanout1k wsp2p500 wsidle protofanout1k protoidle vehicles10k danmaku5k tlsconnect5k tlsfanout1k"}
OUT=${OUT:-target/compare}
PORT=${PORT:-21883}
WS_PORT=$((PORT + 2))
HTTP_PORT=$((PORT + 3))
TLS_PORT=$((PORT + 4))
BROKER_CPU=${BROKER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

# ---- peers -----------------------------------------------------------------
need=()
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v nats-server >/dev/null || need+=(nats-server)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}"
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
RUMQTTD=${RUMQTTD:-target/peers/bin/rumqttd}
[ -x "$RUMQTTD" ] || { [ -x /opt/rumqttd/bin/rumqttd ] && RUMQTTD=/opt/rumqttd/bin/rumqttd; }
if [[ " $BROKERS " == *" rumqttd "* ]] && [ ! -x "$RUMQTTD" ]; then
  echo "installing rumqttd (cargo install rumqttd, once)..." >&2
  cargo install rumqttd --root target/peers
fi
cargo build --release --quiet
STARLING=target/release/starling
if [[ " $BROKERS " == *" starling-sysalloc "* ]]; then
  # The allocator A/B: the same code on the system allocator.
  cargo build --release --quiet --no-default-features
  cp target/release/starling target/release/starling-sysalloc
  cargo build --release --quiet  # the shipped (mimalloc) binary back in place
fi

mkdir -p "$OUT/results" "$OUT/run"
rm -f "$OUT"/results/*.json

# A CA and a server certificate for 127.0.0.1, for the TLS rows.
PKI="$OUT/pki"
if [ ! -s "$PKI/server.pem" ]; then
  mkdir -p "$PKI"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=bench-ca \
    -keyout "$PKI/ca.key" -out "$PKI/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$PKI/server.key" -out "$PKI/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' > "$PKI/san.ext"
  openssl x509 -req -in "$PKI/server.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" -CAcreateserial -days 30 \
    -extfile "$PKI/san.ext" -out "$PKI/server.pem" 2>/dev/null
  chmod 644 "$PKI/server.key"
fi

# ---- brokers -----------------------------------------------------------------
start_broker() { # NAME SCENARIO -> echoes PID once the port accepts connections
  local name=$1 scenario=$2 dir="$OUT/run/$1"
  if (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then
    echo "port $PORT is already in use: stop what listens there or set PORT" >&2; exit 1
  fi
  rm -rf "$dir"; mkdir -p "$dir"
  case $name in
    starling)
      # The shipped configuration: sled under the run directory, classes on.
      local config=config.toml
      if [ "$scenario" = danmaku5k ]; then
        # Plus one user with the `server` role, who alone may send gifts.
        echo gift-secret | "$STARLING" passwd "$dir/passwd" gift-service >/dev/null
        sed "s|^\[auth\]$|[auth]\nchain = [\"password_file\"]\npassword_file = \"$dir/passwd\"\nallow_anonymous = true\nacl_default = \"allow\"|" config.toml > "$dir/config.toml"
        printf '\n[[auth.roles]]\nuser = "gift-service"\nroles = ["server"]\n' >> "$dir/config.toml"
        config="$dir/config.toml"
      elif [[ $scenario == tls* ]]; then
        # Plus a TLS listener with the bench CA's certificate.
        sed -e "s|^tls_bind = \"127.0.0.1:8883\"|tls_bind = \"127.0.0.1:$TLS_PORT\"|" \
          -e "s|^tls_bind = \"127.0.0.1:8084\"|tls_bind = \"127.0.0.1:$((PORT + 5))\"|" config.toml > "$dir/config.toml"
        printf '\n[tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$PWD/$PKI/server.pem" "$PWD/$PKI/server.key" >> "$dir/config.toml"
        config="$dir/config.toml"
      fi
      set -- "$STARLING" serve --config "$config" --data-dir "$dir/data" \
        --mqtt-bind 127.0.0.1:$PORT --ws-bind 127.0.0.1:$WS_PORT --http-bind 127.0.0.1:$HTTP_PORT ;;
    starling-sysalloc)
      # The allocator A/B: the shipped configuration on a build with the
      # system allocator (cargo build --release --no-default-features,
      # copied to target/release/starling-sysalloc).
      set -- target/release/starling-sysalloc serve --config config.toml --data-dir "$dir/data" \
        --mqtt-bind 127.0.0.1:$PORT --ws-bind 127.0.0.1:$WS_PORT --http-bind 127.0.0.1:$HTTP_PORT ;;
    starling-base)
      # An A/B against another build of starling: the shipped configuration
      # on the binary at $STARLING_BASE (e.g. a release build of the commit
      # before a change, copied there).
      set -- "${STARLING_BASE:-target/release/starling-base}" serve --config config.toml --data-dir "$dir/data" \
        --mqtt-bind 127.0.0.1:$PORT --ws-bind 127.0.0.1:$WS_PORT --http-bind 127.0.0.1:$HTTP_PORT ;;
    starling-mem)
      set -- "$STARLING" serve --config config.toml --storage memory \
        --mqtt-bind 127.0.0.1:$PORT --ws-bind 127.0.0.1:$WS_PORT --http-bind 127.0.0.1:0 ;;
    mosquitto)
      # set_tcp_nodelay: Mosquitto's best latency (its default leaves Nagle on).
      printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000\nset_tcp_nodelay true\nlistener %s 127.0.0.1\nprotocol websockets\n' \
        $PORT $WS_PORT > "$dir/mosquitto.conf"
      # Durable rows: Mosquitto's persistence on (it saves its database
      # every autosave_interval and at exit; it does not fsync per message).
      # (Mosquitto started as root runs as user mosquitto: it must be able to
      # write there and read the throw-away key.)
      [[ $scenario != durable* ]] || { chmod 777 "$dir"; printf 'persistence true\npersistence_location %s/\n' "$PWD/$dir" >> "$dir/mosquitto.conf"; }
      [[ $scenario != tls* ]] || printf 'listener %s 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n' \
        $TLS_PORT "$PKI/ca.pem" "$PKI/server.pem" "$PKI/server.key" >> "$dir/mosquitto.conf"
      set -- "$MOSQUITTO" -c "$dir/mosquitto.conf" ;;
    nats)
      # MQTT over WebSocket: nats-server's websocket listener, path /mqtt.
      printf 'listen: 127.0.0.1:%s\nserver_name: bench\njetstream { store_dir: "%s/js" }\nmqtt { listen: 127.0.0.1:%s }\nwebsocket { listen: 127.0.0.1:%s, no_tls: true }\n' \
        $((PORT + 1)) "$dir" $PORT $WS_PORT > "$dir/nats.conf"
      set -- nats-server -c "$dir/nats.conf" ;;
    rumqttd)
      cat > "$dir/rumqttd.toml" <<TOML
id = 0
[router]
id = 0
max_connections = 20010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:$PORT"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true
TOML
      set -- "$RUMQTTD" -c "$dir/rumqttd.toml" ;;
    *) echo "unknown broker $name" >&2; exit 2 ;;
  esac
  # 20,000 files: what a process here may open (enough for the idle run).
  prlimit --nofile=20000:20000 taskset -c "$BROKER_CPU" "$@" > "$dir/log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || break
    if (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then echo "$pid"; return; fi
    sleep 0.05
  done
  echo "$name did not start; see $dir/log" >&2; kill "$pid" 2>/dev/null; exit 1
}

stop_broker() { # the broker is not this shell's child: poll until it is gone
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.05
  done
  kill -9 "$1" 2>/dev/null || true
  sleep 0.2
}

# ---- scenarios -----------------------------------------------------------------
scenario_args() {
  case $1 in
    fanout1k) echo "fanout --publishers 1 --subscribers 1000 --size 64 --rate max" ;;
    fanout5k) echo "fanout --publishers 1 --subscribers 5000 --size 64 --rate 200" ;;
    fanout1kr) echo "fanout --publishers 1 --subscribers 1000 --size 64 --rate 1000" ;;
    fanin2k)  echo "fanin --publishers 2000 --subscribers 1 --size 64 --rate 10000 --rate-total" ;;
    p2p500)   echo "p2p --pairs 500 --size 256 --rate max" ;;
    p2p500q1) echo "p2p --pairs 500 --size 256 --rate max --qos 1" ;;
    # Throughput (a window of 100 unacknowledged per publisher), then the
    # acknowledgement latency at 5,000 msg/s (10 per pair), under capacity.
    durable500) echo "p2p --pairs 500 --size 256 --rate max --qos 1 --persistent" ;;
    durable500r) echo "p2p --pairs 500 --size 256 --rate 10 --qos 1 --persistent" ;;
    vehicles10k) echo "fanin --publishers 10000 --subscribers 10 --size 64 --rate 1 --topic-prefix fleet --ramp 2000" ;;
    # 200 comments/s from 200 viewers (1/s each: under the class's 2/s limit), 5 gifts/s.
    tlsconnect5k) echo "idle --transport mqtts --ca-file $PKI/ca.pem --subscribers 5000 --keep-alive 60" ;;
    tlsfanout1k) echo "fanout --transport mqtts --ca-file $PKI/ca.pem --publishers 1 --subscribers 1000 --size 64 --rate max" ;;
    danmaku5k) echo "danmaku --publishers 200 --subscribers 5000 --size 64 --rate 200 --rate-total --topic-prefix bench --gift-rate 5 --gift-username gift-service --gift-password gift-secret" ;;
    idle)     echo "idle --subscribers 19500 --keep-alive 60" ;;
    idlebare) echo "idle --subscribers 19500 --keep-alive 60 --no-subscribe" ;;
    wsfanout1k) echo "fanout --transport ws-mqtt --publishers 1 --subscribers 1000 --size 64 --rate max" ;;
    wsp2p500) echo "p2p --transport ws-mqtt --pairs 500 --size 256 --rate max" ;;
    wsidle)   echo "idle --transport ws-mqtt --subscribers 19500 --keep-alive 60" ;;
    protofanout1k) echo "fanout --transport ws-proto --publishers 1 --subscribers 1000 --size 64 --rate max" ;;
    protoidle) echo "idle --transport ws-proto --subscribers 19500 --keep-alive 60" ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac
}

# Which port a scenario talks to, and whether a broker serves it at all.
scenario_port() { case $1 in ws*|proto*) echo $WS_PORT ;; tls*) echo $TLS_PORT ;; *) echo $PORT ;; esac; }
serves() { # BROKER SCENARIO
  # starling-mem (the extra row) on the rows where storage could matter.
  [[ $1 != starling-mem ]] || [[ " fanout1k p2p500 p2p500q1 idle wsfanout1k " == *" $2 "* ]] || return 1
  case $2 in
    durable*) [[ $1 != starling-mem && ($1 == starling* || $1 == mosquitto || $1 == nats) ]] ;;
    vehicles*|danmaku*) [[ $1 == starling ]] ;;
    tls*) [[ $1 == starling || $1 == mosquitto ]] ;;
    ws*) [[ $1 != rumqttd ]] ;;
    proto*) [[ $1 == starling* ]] ;;
    *) true ;;
  esac
}

for round in $(seq 1 "$ROUNDS"); do
  for scenario in $SCENARIOS; do
    for broker in $BROKERS; do
      serves "$broker" "$scenario" || continue
      pid=$(start_broker "$broker" "$scenario")
      echo "round $round  $scenario  $broker (pid $pid)" >&2
      # shellcheck disable=SC2046
      if ! taskset -c "$LOAD_CPU" "$STARLING" bench $(scenario_args "$scenario") \
          --broker 127.0.0.1:"$(scenario_port "$scenario")" --duration "$DURATION" --warmup "$WARMUP" --drain 5 \
          --broker-pid "$pid" --json --quiet > "$OUT/results/$scenario.$broker.$round.json" 2> "$OUT/run/$broker/bench.err"; then
        echo "  failed (see $OUT/run/$broker/)" >&2
        rm -f "$OUT/results/$scenario.$broker.$round.json"
      elif [[ $broker == starling* ]]; then
        curl -sf "http://127.0.0.1:$HTTP_PORT/metrics" > "$OUT/run/$broker/metrics.txt" || true
        cp "$OUT/run/$broker/metrics.txt" "$OUT/run/$broker/$scenario.$round.metrics.txt"
        # The delivery-stall guard of issue 23: a writer that left a reading
        # subscriber's outbox non-empty without progress. Must stay 0.
        stalls=$(awk '/^starling_writer_stalls_total/ {s += $2} END {print s + 0}' "$OUT/run/$broker/metrics.txt")
        [[ $stalls == 0 ]] || echo "  WRITER STALLS: $stalls (see $OUT/run/$broker/metrics.txt)" >&2
        if [[ $scenario == durable* ]]; then
          # Group commit: acknowledgements answered per fsync, from /metrics.
          python3 benches/summarize.py --add-commit-batch "$OUT/run/$broker/metrics.txt" "$OUT/results/$scenario.$broker.$round.json"
        fi
      fi
      stop_broker "$pid"
    done
  done
done

# The disk's own limit for durable rows: a plain append + fdatasync loop in
# the directory the brokers' stores used.
if [[ " $SCENARIOS " == *" durable"* ]]; then
  taskset -c "$BROKER_CPU" python3 benches/fsync_loop.py "$OUT/run" 5 > "$OUT/results/fsync.json"
fi

python3 benches/summarize.py "$OUT/results" --charts "$OUT/charts" | tee "$OUT/summary.md"
