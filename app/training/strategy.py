"""Strategy names -> `tf.distribute` strategies, and what multi-worker training needs around them.

Multi-worker start-up: TensorFlow's `MultiWorkerMirroredStrategy()` blocks, silently and deaf to
SIGTERM, until every worker of `TF_CONFIG` has started. So before creating it, each worker
listens on its own address and waits for every peer's address to accept connections, logging
which peers it is waiting for, and gives up after `worker_timeout` seconds with a clear error.
SIGTERM stops a worker at any point (a watcher thread receives it even while TensorFlow blocks).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time

import tensorflow as tf

from app.cli import exit_on_sigterm
from app.config import STRATEGIES

log = logging.getLogger("app.training")


def configure_cpu_devices(count: int) -> int:
    """Splits the CPU into `count` logical devices (only possible before TensorFlow starts).

    Returns:
        The number of logical CPUs now visible.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        if count > 1:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        log.debug("TensorFlow already started; keeping its logical CPUs")
    return len(tf.config.list_logical_devices("CPU"))


def get_strategy(name: str, cpu_devices: int = 2, worker_timeout: float = 300.0) -> tf.distribute.Strategy:
    """Returns the strategy for a name.

    Args:
        name: `default`, `one_device`, `mirrored` (all local GPUs, or `cpu_devices` logical CPUs
            when there is no GPU) or `multi_worker` (`MultiWorkerMirroredStrategy` from `TF_CONFIG`).
        cpu_devices: logical CPU devices for `mirrored` without GPUs.
        worker_timeout: `multi_worker`: seconds to wait for every peer to start.

    Raises:
        ValueError: for an unknown name, `multi_worker` without a valid `TF_CONFIG`, or peers
            that did not start in time.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(map(repr, STRATEGIES))}. Received: strategy={name!r}")
    if name == "multi_worker":
        return _multi_worker(worker_timeout)
    gpus = tf.config.list_physical_devices("GPU")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy()
        count = configure_cpu_devices(cpu_devices)
        devices = [f"/cpu:{i}" for i in range(min(count, cpu_devices))]
        return tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


def read_tf_config() -> tuple[list, int]:
    """The worker addresses and this worker's index from `TF_CONFIG`.

    Raises:
        ValueError: TF_CONFIG missing or malformed, with an example.
    """
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError("strategy='multi_worker' needs TF_CONFIG, e.g. "
                         '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}')
    try:
        tf_config = json.loads(raw)
        workers, index = list(tf_config["cluster"]["worker"]), int(tf_config["task"]["index"])
        if not 0 <= index < len(workers) or any(":" not in str(w) for w in workers):
            raise ValueError("task index outside the worker list, or an address without a port")
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"TF_CONFIG is not valid for multi_worker: {raw!r} ({err})") from None
    return workers, index


def _multi_worker(timeout: float) -> tf.distribute.Strategy:
    workers, index = read_tf_config()
    exit_on_sigterm()  # (train.py calls it before TensorFlow starts its threads)
    wait_for_peers(workers, index, timeout)
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = str(address).rpartition(":")
    return host.strip("[]"), int(port)


def wait_for_peers(workers: list, index: int, timeout: float, poll: float = 0.5) -> None:
    """Listens on this worker's address and waits until every peer's address accepts connections.

    Raises:
        ValueError: naming the peers that did not start within `timeout` seconds, or this
            worker's address when it cannot be bound.
    """
    host, port = _split_address(workers[index])
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", port))  # all interfaces, as TensorFlow's own server will
        listener.listen(len(workers) * 4)
    except OSError as err:
        listener.close()
        raise ValueError(f"cannot listen on this worker's address {workers[index]} (TF_CONFIG task {index}): "
                         f"{err.strerror}") from None
    waiting = {w for i, w in enumerate(workers) if i != index}
    started, next_log = time.time(), 0.0
    try:
        while waiting:
            waiting = {w for w in waiting if not _accepts(w)}
            elapsed = time.time() - started
            if not waiting:
                break
            if elapsed > timeout:
                raise ValueError(f"multi_worker: gave up after {timeout:.0f}s waiting for worker(s) "
                                 f"{', '.join(sorted(waiting))} (TF_CONFIG); start every worker, or raise "
                                 f"--worker-timeout")
            if elapsed >= next_log:
                log.info("waiting for worker(s) %s to start (%.0fs of %.0fs)", ", ".join(sorted(waiting)), elapsed,
                         timeout)
                next_log = elapsed + 10
            time.sleep(poll)
    finally:
        listener.close()  # never accepted: peers' probes are reset, leaving the port free for TensorFlow


def _accepts(address: str) -> bool:
    host, port = _split_address(address)
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def broadcast_from_chief(strategy: tf.distribute.Strategy, value: int) -> int:
    """The chief's `value` on every worker (a no-op outside multi-worker training)."""
    if not is_multi_worker(strategy):
        return value
    tensor = tf.constant(value if is_chief(strategy) else 0, tf.int64)

    @tf.function
    def reduce():
        def replica_fn():
            ctx = tf.distribute.get_replica_context()
            mine = tf.where(tf.equal(ctx.replica_id_in_sync_group, 0), tensor, tf.zeros_like(tensor))
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, mine)

        return strategy.run(replica_fn)

    return int(strategy.experimental_local_results(reduce())[0].numpy())


def sync_from_chief(strategy: tf.distribute.Strategy, variables: list) -> None:
    """Overwrites `variables` on every worker with the chief's values (after the chief restored
    a checkpoint that the other workers do not have)."""

    @tf.function
    def sync():
        def replica_fn():
            ctx = tf.distribute.get_replica_context()
            first = tf.equal(ctx.replica_id_in_sync_group, 0)
            for variable in variables:
                value = tf.convert_to_tensor(variable)
                mine = tf.where(first, value, tf.zeros_like(value))
                if value.dtype.is_floating:
                    variable.assign(ctx.all_reduce(tf.distribute.ReduceOp.SUM, mine))
                else:  # integer collectives: go through int64
                    total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(mine, tf.int64))
                    variable.assign(tf.cast(total, value.dtype))

        strategy.run(replica_fn)

    sync()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes outputs (always true outside multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


def worker_shards(strategy: tf.distribute.Strategy) -> tuple[int, int]:
    """`(this worker's index, number of workers)`: which share of the shards a worker reads."""
    if not is_multi_worker(strategy):
        return 0, 1
    resolver = strategy.cluster_resolver
    return int(resolver.task_id), len(resolver.cluster_spec().as_dict().get("worker", [])) or 1
