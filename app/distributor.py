"""Where a command's shard tasks run: in this process (the default) or on a Ray cluster.

A command cuts its work into `Shard`s (a name, a size in photos for the progress bar, a payload and
a key: a digest of what the shard reads) and gives a `ShardJob`: a task function
`run(payload) -> dict` (the shard's result; JSON-able where markers keep it), or, with `setup`, `run(state, payload)`
where `state = setup()` is made once per worker (a teacher model loaded once by each Ray actor).
`Distributor.run` yields each shard's `ShardOutcome` as it completes:

- `LocalDistributor`: in this process, one shard after another, in order (the default);
- `RayDistributor` (`--ray`: `RAY_ADDRESS`, else a Ray started in this process; `--ray ADDRESS`: a
  cluster): remote tasks (actors with `setup`), at most two per CPU of the cluster in flight, so
  that the driver's memory does not grow with the number of shards.

On Ray, a shard that raises, or whose worker, actor or node is lost, is run again, `shard_retries`
times (Ray's task and actor retries). A shard that fails every retry comes back with its `error`,
and the job goes on: the command counts its photos as failed and says so in its exit status. In
this process, a shard that raises stops the job with its error, as today. Tasks must be idempotent: they write their outputs atomically, under names fixed by the
shard, so a second attempt replaces, never adds to, what a lost one wrote.

With `ShardMarkers`, each completed shard gets a marker file (its key and result, written atomically
by the driver once the shard's outputs are complete), and a re-run does not run again a shard whose
marker holds the same key: it comes back `skipped`, with the marker's result.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional
from urllib.parse import urlsplit

from tqdm import tqdm

from app.config import DistributeConfig
from app.errors import InputError
from app.fileio import atomic_write_json

log = logging.getLogger(__name__)
LOCAL = "local"


@dataclass(frozen=True)
class Shard:
    """One unit of a command's work.

    Args:
        name: unique in the job and a safe file name (`00042`).
        size: photos, for the progress bar.
        payload: what the task function gets (picklable).
        key: digest of the shard's inputs: a marker with another key is not this shard's.
    """

    name: str
    size: int
    payload: Any
    key: str = ""


@dataclass(frozen=True)
class ShardJob:
    """What to run on each shard: `run(payload)`; `run(setup(), payload)` with `setup`; or
    `run(shared, payload)` with `shared`.

    Args:
        run: the task function (module level, so that Ray workers import it).
        setup: made once per worker (a Ray actor): its result is `run`'s first argument.
        shared: what every task reads (the Open Images side of a join): sent to the cluster once.
        num_gpus: GPUs per Ray worker of a `setup` job, when the cluster has any.
    """

    run: Callable
    setup: Optional[Callable] = None
    shared: Any = None
    num_gpus: float = 1.0

    def args(self, first, payload) -> tuple:
        """`run`'s arguments: the payload, after the worker's state or the shared value if any."""
        return (payload,) if self.setup is None and self.shared is None else (first, payload)


@dataclass
class ShardOutcome:
    """A shard's end: its `result`, or the `error` of its last attempt; `skipped` when a marker said
    it was complete already."""

    shard: Shard
    result: Optional[dict] = None
    error: str = ""
    skipped: bool = False


class ShardMarkers:
    """Completion markers of a job's shards: `FOLDER/NAME.json` holds a shard's key and result.

    Args:
        folder: where the markers go (created).
        accept: whether a marker's result makes its shard complete (default: any result).
    """

    def __init__(self, folder: str | Path, accept: Callable[[dict], bool] = lambda result: True):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.accept = accept

    def earlier(self, shard: Shard) -> Optional[ShardOutcome]:
        """A `skipped` outcome with the result of an earlier run of this very shard, or None."""
        try:
            marker = json.loads((self.folder / f"{shard.name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(marker, dict) or marker.get("key") != shard.key or not isinstance(marker.get("result"), dict):
            return None
        return ShardOutcome(shard, marker["result"], skipped=True) if self.accept(marker["result"]) else None

    def mark(self, shard: Shard, result: dict) -> None:
        atomic_write_json(self.folder / f"{shard.name}.json", {"key": shard.key, "result": result})


class Distributor:
    """Runs shard tasks and yields their outcomes (see the module docstring).

    `spreads`: whether shards run in other processes (then a command cuts its work into many);
    `slots`: how many run at once.
    """

    spreads = True
    slots = 1

    def run(self, job: ShardJob, shards: Iterable[Shard], markers: Optional[ShardMarkers] = None,
            progress: bool = False, desc: str = "shards", total: Optional[int] = None,
            unit: str = "photo") -> Iterator[ShardOutcome]:
        """Runs every shard not complete already; yields each outcome as it comes.

        Args:
            job: the task.
            shards: the shards, streamed (read only as slots free up).
            markers: skip complete shards, and mark the others as they complete.
            progress: one progress bar over all shards, in photos (shard sizes).
            desc: the progress bar's label.
            total: photos in all shards, if known.
            unit: what a shard's size counts.
        """
        todo = (markers.earlier(shard) or shard if markers is not None else shard for shard in shards)
        with tqdm(total=total, unit=unit, desc=desc, disable=not progress, smoothing=0.05) as bar:
            for outcome in self._outcomes(job, todo):
                if markers is not None and outcome.result is not None and not outcome.skipped:
                    markers.mark(outcome.shard, outcome.result)
                bar.update(outcome.shard.size)
                yield outcome

    def _outcomes(self, job: ShardJob, todo: Iterator) -> Iterator[ShardOutcome]:
        """Outcomes of `todo`'s shards (`ShardOutcome`s in it are complete already: passed on)."""
        raise NotImplementedError

    def close(self) -> None:
        """Lets the cluster go (nothing to do in process)."""


class LocalDistributor(Distributor):
    """Runs the shards in this process, one after another, in order. A shard that raises stops the
    job with its error, as any error of this process does: there is no worker to lose, and no other
    attempt would go otherwise."""

    spreads = False

    def _outcomes(self, job: ShardJob, todo: Iterator) -> Iterator[ShardOutcome]:
        state = None
        for item in todo:
            if isinstance(item, ShardOutcome):
                yield item
                continue
            if job.setup is not None and state is None:
                state = job.setup()
            yield ShardOutcome(item, job.run(*job.args(state if job.setup else job.shared, item.payload)))


class _ShardWorker:
    """A Ray actor of a `setup` job: makes the state once, then runs shards with it."""

    def __init__(self, setup: Callable):
        self.state = setup()

    def run(self, fn: Callable, payload) -> dict:
        return fn(self.state, payload)


class RayDistributor(Distributor):
    """Runs the shards on a Ray cluster (connected on creation).

    Args:
        address: `--ray`'s value (see `cluster_address`); unused when this process is connected
            to Ray already (that connection is used, and left open).
        retries: attempts after a shard failed (it raised, or its worker, actor or node was lost).
        connect_timeout: seconds for the cluster's address to answer.

    Raises:
        InputError: Ray is not installed, or the cluster does not answer.
    """

    def __init__(self, address: str, retries: int = 2, connect_timeout: float = 10.0):
        try:
            import ray
        except ImportError as err:
            raise InputError("--ray needs the ray package: pip install 'ray[data]>=2.60,<3'") from err
        self.ray, self.retries = ray, retries
        target = cluster_address(address)
        self.owned = not ray.is_initialized()  # a connection made by the caller stays the caller's
        started = time.monotonic()
        if self.owned:
            if target is not None:
                check_answers(target, connect_timeout)
            ray.init(address=target or LOCAL, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        self.startup_s = time.monotonic() - started
        resources = ray.cluster_resources()
        self.cpus, self.gpus = max(1, int(resources.get("CPU", 1))), int(resources.get("GPU", 0))
        self.slots = self.cpus
        log.info("ray: %s, %d CPUs, %d GPUs, connected in %.1fs", target or "a local Ray", self.cpus, self.gpus,
                 self.startup_s)

    def _outcomes(self, job: ShardJob, todo: Iterator) -> Iterator[ShardOutcome]:
        return self._with_actors(job, todo) if job.setup is not None else self._with_tasks(job, todo)

    def _with_tasks(self, job: ShardJob, todo: Iterator) -> Iterator[ShardOutcome]:
        remote = self.ray.remote(job.run).options(num_cpus=1, max_retries=self.retries, retry_exceptions=True)
        shared = self.ray.put(job.shared) if job.shared is not None else None
        pending: dict = {}
        for item in todo:
            if isinstance(item, ShardOutcome):
                yield item
                continue
            pending[remote.remote(*job.args(shared, item.payload))] = item
            if len(pending) >= 2 * self.cpus:
                yield self._next(pending)
        while pending:
            yield self._next(pending)

    def _with_actors(self, job: ShardJob, todo: Iterator) -> Iterator[ShardOutcome]:
        """One shard at a time per actor; as many actors as GPUs (or CPUs), made as shards come."""
        gpus = job.num_gpus if self.gpus else 0
        most = max(1, int(self.gpus // gpus) if gpus else self.cpus)
        kind = self.ray.remote(_ShardWorker).options(num_cpus=1, num_gpus=gpus, max_restarts=self.retries,
                                                     max_task_retries=self.retries)
        idle, busy, pending = [], {}, {}
        for item in todo:
            if isinstance(item, ShardOutcome):
                yield item
                continue
            if not idle and len(busy) >= most:
                yield self._next(pending, busy, idle)
            actor = idle.pop() if idle else kind.remote(job.setup)
            ref = actor.run.options(retry_exceptions=True).remote(job.run, item.payload)
            pending[ref], busy[ref] = item, actor
        for actor in idle:  # free their CPUs for an actor being restarted elsewhere
            self.ray.kill(actor)
        while pending:
            yield self._next(pending, busy)

    def _next(self, pending: dict, busy: Optional[dict] = None, idle: Optional[list] = None) -> ShardOutcome:
        """Waits for one pending shard to end; its actor goes back to `idle`, or is let go."""
        (ref,), _ = self.ray.wait(list(pending), num_returns=1)
        shard, actor = pending.pop(ref), busy.pop(ref) if busy is not None else None
        try:
            outcome = ShardOutcome(shard, self.ray.get(ref))
        except self.ray.exceptions.RayError as err:
            log.warning("shard %s failed every attempt: %s", shard.name, _one_line(err))
            outcome, idle = ShardOutcome(shard, error=_one_line(err)), None
        if actor is not None:
            if idle is not None:
                idle.append(actor)
            else:
                self.ray.kill(actor)
        return outcome

    def close(self) -> None:
        if self.owned:
            self.ray.shutdown()


def _one_line(err: BaseException) -> str:
    """A Ray error as one line: the task's own exception when it raised one."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {' '.join(str(cause).split())}"
    first = next((line for line in str(err).splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {first.strip()}"


def make_distributor(config: DistributeConfig) -> Distributor:
    """In process without `config.ray`; else connected to Ray (see `RayDistributor`).

    Raises:
        InputError: the cluster does not answer.
    """
    if config.ray is None:
        return LocalDistributor()
    return RayDistributor(config.ray, config.shard_retries, config.connect_timeout)


def cluster_address(address: str) -> Optional[str]:
    """The address Ray connects to: `--ray ADDRESS`, else `RAY_ADDRESS`, else None (a local Ray)."""
    if address and address != LOCAL:
        return address
    if not address:
        return os.environ.get("RAY_ADDRESS") or None
    return None


def check_answers(address: str, timeout: float) -> None:
    """Refuses, within `timeout` seconds, a cluster address whose port does not accept a connection
    (Ray itself would wait for minutes).

    Raises:
        InputError: `ray cluster at ADDRESS does not answer ...`.
    """
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    if parts.scheme not in ("ray", "") or not parts.hostname or parts.port is None:
        if address == "auto":
            return
        raise InputError(f"--ray {address}: expected host:port of a Ray cluster's head, ray://host:port, or local")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((parts.hostname, parts.port), timeout=max(0.1, deadline - time.monotonic())):
                return
        except OSError as err:
            if time.monotonic() + 0.5 >= deadline:
                raise InputError(f"ray cluster at {address} does not answer ({err.strerror or err}) within "
                                 f"{timeout:g}s; start it with `ray start --head`, or drop --ray to run "
                                 f"in this process") from err
            time.sleep(0.5)


def add_distribute_flags(parser: argparse.ArgumentParser, shard_photos: bool = False) -> None:
    """`--ray [ADDRESS]`, `--shard-retries`, `--connect-timeout` (and `--shard-photos`)."""
    from app.cli import add_config_flags

    group = parser.add_argument_group("spreading the work (docs/scale.md)")
    help_text = DistributeConfig.__dataclass_fields__["ray"].metadata["help"]
    group.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", dest="distribute.ray",
                       help=f"{help_text}; --ray alone: RAY_ADDRESS if set, else a local Ray")
    names = ["shard_retries", "connect_timeout"] + (["shard_photos"] if shard_photos else [])
    add_config_flags(group, DistributeConfig, "distribute", names)
