#!/usr/bin/env python3
"""Medians and ratios of benches/compare.sh results: one table per scenario.

Usage: summarize.py RESULTS_DIR [--charts DIR]
       (files SCENARIO.BROKER.ROUND.json, and fsync.json from
       benches/fsync_loop.py; --charts writes one SVG bar chart per scenario,
       of its first metric's medians)
       summarize.py --add-commit-batch METRICS_TXT RESULT_JSON
           adds starling's acknowledgements per fsync (group commit, from its
           /metrics) to one result as "messages_per_fsync".
"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

# What each scenario is judged on: (label, extract, higher_is_better, format)
def p99(r):
    return r["latency_ms"]["p99"] if r.get("latency_ms") else None

def ack_p99(r):
    return r["ack_latency_ms"]["p99"] if r.get("ack_latency_ms") else None

def acked_per_sec(r):
    return r["acked"] / r["measured_secs"] if r.get("acked") is not None and r.get("measured_secs") else None

METRICS = {
    "fanout1k": [("deliveries/s", lambda r: r["deliveries_per_sec"], True, "{:,.0f}"),
                 ("peak RSS MB", lambda r: (r["broker_peak_rss_bytes"] or 0) / 1e6, False, "{:.1f}")],
    "fanout5k": [("p99 ms", p99, False, "{:.2f}"),
                 ("loss %", lambda r: r["loss_ratio"] * 100, False, "{:.3f}"),
                 ("deliveries/s", lambda r: r["deliveries_per_sec"], True, "{:,.0f}"),
                 ("connect 5,001 s", lambda r: r["connect_secs"], False, "{:.3f}")],
    "fanout1kr": [("p99 ms", p99, False, "{:.2f}"),
                  ("loss %", lambda r: r["loss_ratio"] * 100, False, "{:.3f}"),
                  ("deliveries/s", lambda r: r["deliveries_per_sec"], True, "{:,.0f}")],
    "fanin2k": [("p99 ms", p99, False, "{:.2f}"),
                ("loss %", lambda r: r["loss_ratio"] * 100, False, "{:.3f}")],
    "p2p500": [("deliveries/s", lambda r: r["deliveries_per_sec"], True, "{:,.0f}"),
               ("p99 ms", p99, False, "{:.1f}")],
    "p2p500q1": [("deliveries/s", lambda r: r["deliveries_per_sec"], True, "{:,.0f}"),
                 ("p99 ms", p99, False, "{:.1f}")],
    # At max rate a publisher sends as fast as acknowledgements free its
    # window, so messages sent per second is the acknowledged rate.
    "durable500": [("acked/s", lambda r: r["publish_rate"], True, "{:,.0f}"),
                   ("loss %", lambda r: r["loss_ratio"] * 100, False, "{:.3f}"),
                   ("msgs per fsync", lambda r: r.get("messages_per_fsync"), True, "{:.1f}")],
    "durable500r": [("ack p99 ms", ack_p99, False, "{:.2f}"),
                    ("delivery p99 ms", p99, False, "{:.2f}"),
                    ("acked/s", acked_per_sec, True, "{:,.0f}"),
                    ("loss %", lambda r: r["loss_ratio"] * 100, False, "{:.3f}"),
                    ("msgs per fsync", lambda r: r.get("messages_per_fsync"), True, "{:.1f}")],
    "vehicles10k": [("p99 ms", p99, False, "{:.2f}"),
                    ("deliveries/s", lambda r: r["deliveries_per_sec"], True, "{:,.0f}"),
                    ("delivered %", lambda r: (1 - r["loss_ratio"]) * 100, True, "{:.2f}"),
                    ("bytes sent/s", lambda r: r.get("received_bytes", 0) / r["measured_secs"], False, "{:,.0f}")],
    "danmaku5k": [("p99 ms", p99, False, "{:.2f}"),
                  ("deliveries/s", lambda r: r["deliveries_per_sec"], True, "{:,.0f}"),
                  ("delivered %", lambda r: (1 - r["loss_ratio"]) * 100, True, "{:.2f}"),
                  ("gifts delivered %", lambda r: 100 * r["gifts_received"] / r["gifts_expected"] if r.get("gifts_expected") else None, True, "{:.2f}")],
    "idle": [("bytes/conn", lambda r: r["bytes_per_connection"], False, "{:,.0f}"),
             ("connect s", lambda r: r["connect_secs"], False, "{:.2f}")],
    "idlebare": [("bytes/conn", lambda r: r["bytes_per_connection"], False, "{:,.0f}"),
                 ("connect s", lambda r: r["connect_secs"], False, "{:.2f}")],
}
METRICS["tlsconnect5k"] = [("connect 5,000 s", lambda r: r["connect_secs"], False, "{:.2f}"),
                           ("bytes/conn", lambda r: r["bytes_per_connection"], False, "{:,.0f}"),
                           ("failed", lambda r: r["connect_failures"], False, "{:.0f}")]
# The WebSocket, starling.v1 and TLS rows are judged like their TCP counterparts.
for alias, base in [("tlsfanout1k", "fanout1k"), ("wsfanout1k", "fanout1k"), ("protofanout1k", "fanout1k"), ("wsp2p500", "p2p500"),
                    ("wsidle", "idle"), ("protoidle", "idle")]:
    METRICS[alias] = METRICS[base]

def add_commit_batch(metrics_txt, result_json):
    """Sets result["messages_per_fsync"] from the commit batch histogram."""
    total = count = 0.0
    for line in Path(metrics_txt).read_text().splitlines():
        if line.startswith("starling_store_commit_batch_size_sum"):
            total = float(line.split()[-1])
        elif line.startswith("starling_store_commit_batch_size_count"):
            count = float(line.split()[-1])
    result = json.loads(Path(result_json).read_text())
    result["messages_per_fsync"] = total / count if count else None
    result["fsyncs"] = count
    Path(result_json).write_text(json.dumps(result))

def bar_chart(path, title, label, higher, medians):
    """A horizontal bar chart (plain SVG) of one metric's medians by broker."""
    rows = [(b, v) for b, v in sorted(medians.items()) if v is not None]
    if not rows:
        return
    width, bar_h, left, top = 640, 26, 130, 44
    top_value = max(v for _, v in rows) or 1
    height = top + bar_h * len(rows) + 16
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="20" font-weight="bold">{title}</text>',
           f'<text x="10" y="36" fill="#555">{label} ({"higher" if higher else "lower"} is better), median of runs</text>']
    for i, (broker, value) in enumerate(rows):
        y = top + i * bar_h
        w = max(1, (width - left - 110) * value / top_value)
        colour = "#1f6feb" if broker.startswith("starling") else "#8b949e"
        out.append(f'<text x="10" y="{y + 17}">{broker}</text>')
        out.append(f'<rect x="{left}" y="{y + 4}" width="{w:.1f}" height="{bar_h - 8}" fill="{colour}"/>')
        out.append(f'<text x="{left + w + 6:.1f}" y="{y + 17}">{value:,.2f}</text>' if value < 100 else
                   f'<text x="{left + w + 6:.1f}" y="{y + 17}">{value:,.0f}</text>')
    out.append("</svg>")
    Path(path).write_text("\n".join(out) + "\n")

def main():
    if sys.argv[1] == "--add-commit-batch":
        add_commit_batch(sys.argv[2], sys.argv[3])
        return
    charts = sys.argv[sys.argv.index("--charts") + 1] if "--charts" in sys.argv else None
    if charts:
        Path(charts).mkdir(parents=True, exist_ok=True)
    results = defaultdict(lambda: defaultdict(list))
    fsync = Path(sys.argv[1]) / "fsync.json"
    if fsync.exists():
        print(f"\nplain fsync loop on this disk: {json.loads(fsync.read_text())['fsyncs_per_sec']:,.0f} fsyncs/s")
    for f in sorted(Path(sys.argv[1]).glob("*.*.*.json")):
        scenario, broker, _round = f.name[:-5].split(".")
        try:
            results[scenario][broker].append(json.loads(f.read_text()))
        except json.JSONDecodeError:
            pass
    for scenario, by_broker in results.items():
        print(f"\n### {scenario}\n")
        metrics = METRICS.get(scenario, [])
        print("| broker | runs | " + " | ".join(m[0] for m in metrics) + " | tool saturated |")
        print("|---" * (len(metrics) + 3) + "|")
        medians = {}
        notes = []
        for broker, runs in sorted(by_broker.items()):
            row = []
            for label, get, _hib, fmt in metrics:
                values = [v for v in (get(r) for r in runs) if v is not None]
                med = statistics.median(values) if values else None
                medians[(broker, label)] = med
                row.append(fmt.format(med) if med is not None else "-")
            saturated = sum(1 for r in runs if r.get("tool_saturated"))
            print(f"| {broker} | {len(runs)} | " + " | ".join(row) + f" | {saturated}/{len(runs)} |")
            cut_off = sum(1 for r in runs if r.get("drain_cut_off"))
            if cut_off and any(m[0] in ("loss %", "delivered %") for m in metrics):
                notes.append(f"{broker}: {cut_off}/{len(runs)} run(s) ended the drain while deliveries still "
                             "arrived; their loss is an undrained backlog, not proven loss")
        for note in notes:
            print(f"\nnote: {note}")
        if "starling" in by_broker and metrics:
            label, _get, higher, _fmt = metrics[0]
            ours = medians.get(("starling", label))
            # Peers only: starling's own extra rows (starling-mem) are not peers.
            peers = {b: medians.get((b, label)) for b in by_broker if not b.startswith("starling")}
            peers = {b: v for b, v in peers.items() if v}
            if ours and peers:
                best = max(peers, key=peers.get) if higher else min(peers, key=peers.get)
                ratio = ours / peers[best] if higher else peers[best] / ours
                print(f"\nstarling vs best peer ({best}) on {label}: {ratio:.2f}x")
        if charts and metrics:
            label, _get, higher, _fmt = metrics[0]
            bar_chart(Path(charts) / f"{scenario}.svg", scenario, label, higher,
                      {b: medians.get((b, label)) for b in by_broker})

if __name__ == "__main__":
    main()
