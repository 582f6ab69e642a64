"""Starting multi-worker training on one machine: N real worker processes with their TF_CONFIG.

Each worker runs `python -m app.train ARGS` with its own `TF_CONFIG` on free loopback ports; its
output lines are prefixed with `[worker i]`. The launcher waits for all of them and fails if any
fails (stopping the others), so a shell sees the outcome. On several machines, set TF_CONFIG on
each instead (see docs/training.md).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def free_ports(count: int) -> list:
    """`count` ports on 127.0.0.1 that are free now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _relay(index: int, stream) -> None:
    for line in stream:
        sys.stdout.write(f"[worker {index}] {line}")
        sys.stdout.flush()


def launch_local_workers(count: int, argv: list) -> int:
    """Runs `count` workers of `python -m app.train argv`; returns the first non-zero exit code, or 0."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(count)]
    root = str(Path(__file__).resolve().parents[2])  # this checkout's `app`, whatever the working folder
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    procs, relays = [], []
    for index in range(count):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path,
               "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
        proc = subprocess.Popen([sys.executable, "-m", "app.train", *argv], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        relays.append(threading.Thread(target=_relay, args=(index, proc.stdout), daemon=True))
        relays[-1].start()

    def stop_all(*_):
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()

    previous = signal.signal(signal.SIGTERM, lambda *a: (stop_all(), sys.exit(143)))
    try:
        code = 0
        while any(proc.poll() is None for proc in procs):
            failed = [proc.returncode for proc in procs if proc.returncode not in (None, 0)]
            if failed and code == 0:  # the others would wait for the failed one forever
                code = failed[0]
                stop_all()
            time.sleep(0.2)
        code = code or next((proc.returncode for proc in procs if proc.returncode != 0), 0)
        for relay in relays:
            relay.join(timeout=5)
        return code
    except KeyboardInterrupt:
        stop_all()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
