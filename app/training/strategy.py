"""Strategy names -> `tf.distribute` strategies."""

from __future__ import annotations

import json
import logging
import os

import tensorflow as tf

from app.config import STRATEGIES

log = logging.getLogger(__name__)


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


def get_strategy(name: str, cpu_devices: int = 2) -> tf.distribute.Strategy:
    """Returns the strategy for a name.

    Args:
        name: `default`, `one_device`, `mirrored` (all local GPUs, or `cpu_devices` logical CPUs
            when there is no GPU) or `multi_worker` (`MultiWorkerMirroredStrategy` from `TF_CONFIG`).
        cpu_devices: logical CPU devices for `mirrored` without GPUs.

    Raises:
        ValueError: for an unknown name, or `multi_worker` without a valid `TF_CONFIG`.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(map(repr, STRATEGIES))}. Received: strategy={name!r}")
    if name == "multi_worker":
        return _multi_worker()
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


def _multi_worker() -> tf.distribute.Strategy:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError("strategy='multi_worker' needs TF_CONFIG, e.g. "
                         '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}')
    try:
        tf_config = json.loads(raw)
        tf_config["cluster"]["worker"], tf_config["task"]["index"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"TF_CONFIG is not valid for multi_worker: {raw!r} ({err})") from err
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes outputs (always true outside multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())
