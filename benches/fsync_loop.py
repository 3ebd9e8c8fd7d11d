#!/usr/bin/env python3
"""The physical limit of a durable acknowledgement on this disk: how many
fsyncs per second a plain loop achieves (append 256 bytes, fdatasync, repeat)
in DIR, the directory the broker's store lives in. A broker that fsyncs once
per QoS 1 message cannot acknowledge faster than this; group commit (many
messages per flush) is how starling goes beyond it (docs/performance.md,
"Durable QoS 1").

    benches/fsync_loop.py DIR [SECONDS]    # prints JSON {"fsyncs_per_sec": ...}
"""
import json
import os
import sys
import time


def main() -> None:
    directory = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "fsync-loop.tmp")
    record = b"x" * 256
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        count = 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            os.write(fd, record)
            os.fdatasync(fd)
            count += 1
        elapsed = time.monotonic() - start
    finally:
        os.close(fd)
        os.unlink(path)
    print(json.dumps({"fsyncs_per_sec": round(count / elapsed, 1), "seconds": round(elapsed, 2), "dir": directory}))


if __name__ == "__main__":
    main()
