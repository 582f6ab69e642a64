"""A real Ray cluster on 127.0.0.1 for the tests: a head and worker nodes, each a `ray start` of its own.

Every node runs in a process group of its own; its processes are that group and their descendants
(Ray's worker processes make groups of their own), so that `kill_worker` can `kill -9` one node (its
raylet and its workers) and `stop` ends exactly the processes started here (never `ray stop`, which
would end every Ray node of the machine). Ports are chosen free; no dashboard, no usage stats; a
token of its own authenticates the nodes and the drivers (`env`).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAY = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalCluster:
    """A head and `workers` worker nodes, each with `cpus` CPUs.

    Args:
        root: a new folder for the head's temporary files and the nodes' logs.
        workers: worker nodes.
        cpus: CPUs of each node.
        timeout: seconds each `ray start` may take.
    """

    def __init__(self, root: Path, workers: int = 2, cpus: int = 1, timeout: float = 120.0):
        self.root, self.cpus, self.timeout = Path(root), cpus, timeout
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT),
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    # a lost node is noticed within about 2 seconds
                    "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4"}
        self.env.pop("RAY_ADDRESS", None)
        self.groups: dict = {}
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._start("head", ["--head", "--port", str(self.port), "--include-dashboard=false",
                             "--ray-client-server-port", str(free_port()), "--temp-dir", str(self.root / "t")])
        for i in range(workers):  # one after another: nodes starting together can pick one socket name
            self._start(f"worker{i}", ["--address", self.address])

    def _start(self, name: str, flags: list) -> None:
        self._wait(*self._spawn(name, flags))

    def _spawn(self, name: str, flags: list) -> tuple:
        log = open(self.root / f"{name}.log", "w")
        process = subprocess.Popen(RAY + ["start", *flags, "--node-ip-address", "127.0.0.1", "--num-cpus",
                                          str(self.cpus), "--dashboard-agent-listen-port", str(free_port()),
                                          "--disable-usage-stats"],
                                   env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.groups[name] = process.pid
        return name, process

    def _wait(self, name: str, process: subprocess.Popen) -> None:
        try:
            code = process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            code = None
        if code != 0:
            self.stop()
            log = (self.root / f"{name}.log").read_text()[-3000:]
            raise RuntimeError(f"ray start of {name} ended with {code}:\n{log}")

    def runs(self, index: int, functions: tuple) -> bool:
        """Whether a process of worker node `index` is running one of these task functions (Ray
        names a worker process `ray::FUNCTION` while it runs one)."""
        titles = {f"ray::{name}" for name in functions}
        return any(_title(pid) in titles for pid in _node_processes(self.groups[f"worker{index}"]))

    def kill_worker(self, index: int) -> None:
        """`kill -9` of every process of worker node `index`."""
        _kill_node(self.groups.pop(f"worker{index}"))

    def stop(self) -> None:
        """Ends every node started here, head last."""
        for name in sorted(self.groups, key=lambda n: n == "head"):
            _kill_node(self.groups.pop(name))


def _processes() -> dict:
    """`{pid: (parent pid, process group)}` of every process."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(stat.parent.name)] = (int(fields[1]), int(fields[2]))
    return out


def _node_processes(group: int) -> set:
    """A node's processes: its `ray start`'s process group, and their descendants (Ray's worker
    processes have process groups of their own)."""
    table = _processes()
    node = {pid for pid, (_, pgid) in table.items() if pgid == group}
    while True:
        children = {pid for pid, (parent, _) in table.items() if parent in node} - node
        if not children:
            return node
        node |= children


def _title(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace").strip()
    except OSError:
        return ""


def _kill_node(group: int) -> None:
    """SIGKILL to every process of a node, then waits (10 s at most) until they are gone."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = [pid for pid in _node_processes(group) if _title(pid)]  # zombies have no command line
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
