"""Ray against one process: download fan-out, prepare's overhead and per-task memory, Ray's start-up.

1. **Download, network-bound.** The loopback fault server (`tests/photo_server.py`, in a process of
   its own so that its CPU is not counted) answers every photo after `--delay` seconds (a far
   server's latency); its 640x480 photos are stored as fetched, so the network is the limit. The same photos are downloaded on a local Ray with 1 worker process, then
   with 2 (`ray.init(num_cpus=N)`; one shard task per CPU, `--threads` download threads each). It
   reports photos/s, the ratio, and the CPU per photo: the Ray worker processes' CPU (/proc, their
   start-up included) and the downloader's own per-stage thread CPU.
2. **Prepare.** A generated world (`app.demo.world`, the real source formats, no images) of
   `--photos` photos is prepared in process, then with `--ray` on a local Ray of the same 2 CPUs,
   each through the command line in a fresh process. It reports wall seconds, the CPU seconds of the
   whole process tree (the run's processes and every Ray process it started), and the peak RSS of
   the largest Ray worker process (a task's memory), at two bucket sizes for the memory per photo.
3. **Start-up.** `ray.init()` of a local Ray (a new cluster), and the first task's round trip.

    python bench/ray_scale.py [--photos 100000] [--download 240] [--delay 0.25] [--work /tmp/ray-scale]

The machine is shared: the load average before and after each part is printed with its figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from app.downloader.download import DownloadConfig, run_download  # noqa: E402
from app.downloader.fetch import FetchConfig  # noqa: E402
from app.downloader.images import md5_base64  # noqa: E402
from app.downloader.reader import DownloadItem  # noqa: E402
from bench.download import photo_like  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def ray_workers() -> dict:
    """`{pid: (cpu seconds, peak RSS kB)}` of this machine's Ray worker processes (`ray::...`)."""
    out = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if not (proc / "cmdline").read_bytes().startswith(b"ray::"):
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            peak = next(int(line.split()[1]) for line in (proc / "status").read_text().splitlines()
                        if line.startswith("VmHWM"))
        except (OSError, StopIteration):
            continue
        out[int(proc.name)] = ((int(fields[11]) + int(fields[12])) / TICK, peak)
    return out


def _serve(photos: dict, delay: float, port_out) -> None:
    from photo_server import PhotoServer

    with PhotoServer(photos, delay=delay, lifetime=3600) as server:
        port_out.put(server.url)
        time.sleep(3600)


def _warm_up_task() -> None:
    """Starts a worker process with the downloader loaded (and holds its CPU a while, so that each
    CPU gets one)."""
    import app.downloader.download  # noqa: F401

    time.sleep(2)


def download_part(count: int, delay: float, threads: int, work: Path) -> dict:
    """Photos/s and CPU per photo on a local Ray of 1, then 2, worker processes."""
    import ray

    from app.distributor import RayDistributor

    originals = [photo_like(640, 480, seed) for seed in range(8)]  # stored as fetched: the network is the limit
    photos = {f"{i}.jpg": originals[i % len(originals)] for i in range(count)}
    urls = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(photos, delay, urls), daemon=True)
    server.start()
    url = urls.get(timeout=60)
    items = [DownloadItem(f"{i:016x}", f"{url}/ok/{i}.jpg", md5_base64(photos[f"{i}.jpg"])) for i in range(count)]
    config = DownloadConfig(max_side=640, workers=threads, fetch=FetchConfig(timeout=60, retries=0))
    runs = []
    try:
        for cpus in (1, 2):
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            ray.get([ray.remote(_warm_up_task).options(num_cpus=1).remote() for _ in range(cpus)])
            distributor, before, started = RayDistributor("local"), ray_workers(), time.time()
            summary = run_download(items, work / f"download-{cpus}", config, distributor, progress=False,
                                   shard_photos=max(1, count // (8 * cpus)))
            seconds, after = time.time() - started, ray_workers()
            cpu = sum(c for pid, (c, _) in after.items()) - sum(before.get(pid, (0, 0))[0] for pid in after)
            ray.shutdown()
            assert summary.ok == count, summary.report()
            runs.append({"worker_processes": cpus, "photos_per_s": round(count / seconds, 1),
                         "worker_cpu_ms_per_photo": round(1000 * cpu / count, 1),
                         "stage_cpu_ms_per_photo": {k: round(1000 * v / count, 2) for k, v in summary.cpu_seconds.items()},
                         "load": load()})
    finally:
        server.kill()
    return {"photos": count, "delay_s": delay, "threads_per_task": threads, "runs": runs,
            "speedup_2_vs_1": round(runs[1]["photos_per_s"] / runs[0]["photos_per_s"], 2)}


def world(photos: int, folder: Path) -> None:
    train = max(4, photos * 2 // 9)  # train + validation + test (a quarter each) + 3x yfcc-only photos
    code = ("from app.demo.world import WorldConfig, write_world; "
            f"write_world({str(folder)!r}, WorldConfig(train_size={train}, validation_size={train // 4}, "
            f"test_size={train // 4}, extra_yfcc={3 * train}, image_size=16))")  # prepare reads no image here
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def prepare_once(raw: Path, out: Path, bucket_photos: int, ray: str | None, env: dict) -> dict:
    """One prepare run in a fresh process (`ray`: None, `local`, or a running cluster's address): wall
    seconds, CPU seconds of the run's process tree and of the Ray workers, their peak RSS."""
    argv = [sys.executable, "app/prepare.py", "--oid-dir", str(raw / "oid"), "--yfcc", str(raw / "yfcc100m_dataset"),
            "--autotags", str(raw / "yfcc100m_autotags"), "--extra-tags", str(raw / "extra_tags.tsv"),
            "--out", str(out), "--bucket-photos", str(bucket_photos), "--no-progress"] + (["--ray", ray] if ray else [])
    before, baseline = resource.getrusage(resource.RUSAGE_CHILDREN), ray_workers()
    seen = dict(baseline)  # Ray worker pid -> (CPU seconds, peak RSS kB), sampled while they live
    started = time.time()
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while process.poll() is None:
        seen.update(ray_workers())
        time.sleep(0.5)
    output = process.stdout.read()
    if process.returncode:
        raise SystemExit(output[-3000:])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    workers = sum(c - baseline.get(pid, (0, 0))[0] for pid, (c, _) in seen.items())
    return {"ray": ray and ("a running cluster" if ray != "local" else "local, started by the run"),
            "seconds": round(time.time() - started, 1), "driver_tree_cpu_s": round(cpu, 1),
            "ray_worker_cpu_s": round(workers, 1) if ray else None,
            "ray_worker_peak_MB": round(max([p for _, p in seen.values()] or [0]) / 1024, 1) if ray else None,
            "load": load()}


def prepare_part(photos: int, work: Path, buckets: list, modes: list) -> dict:
    """In process, on a Ray started by the run, and on a running Ray of 2 CPUs, at each bucket size."""
    from ray_cluster import LocalCluster

    raw = work / f"raw-{photos}"
    if not (raw / "yfcc100m_dataset").exists():
        world(photos, raw)
    result = {"photos": photos, "yfcc_bytes": (raw / "yfcc100m_dataset").stat().st_size, "runs": []}
    cluster = LocalCluster(work / "cluster", workers=0, cpus=2)
    try:
        for bucket_photos in buckets:
            for ray in [{"here": None, "local": "local", "cluster": cluster.address}[mode] for mode in modes]:
                env = {**(cluster.env if ray else os.environ), "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
                out = work / f"out-{bucket_photos}-{len(result['runs'])}"
                result["runs"].append({"bucket_photos": bucket_photos,
                                       **prepare_once(raw, out, bucket_photos, ray, env)})
                shutil.rmtree(out, ignore_errors=True)
    finally:
        cluster.stop()
    return result


def startup_part() -> dict:
    import ray

    started = time.time()
    ray.init(include_dashboard=False, log_to_driver=False)
    init = time.time() - started
    started = time.time()
    ray.get(ray.remote(lambda: 1).remote())
    first = time.time() - started
    ray.shutdown()
    return {"ray_init_local_s": round(init, 2), "first_task_s": round(first, 2), "load": load()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=100_000, help="photos of the prepared world")
    parser.add_argument("--buckets", type=int, nargs="+", default=[10_000, 40_000], help="--bucket-photos values")
    parser.add_argument("--download", type=int, default=240, help="photos downloaded per run")
    parser.add_argument("--delay", type=float, default=0.5, help="server seconds per photo")
    parser.add_argument("--threads", type=int, default=4, help="download threads per shard task")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ray-scale"))
    parser.add_argument("--parts", nargs="+", default=["startup", "download", "prepare"])
    parser.add_argument("--modes", nargs="+", default=["here", "local", "cluster"],
                        help="prepare in process, on a Ray it starts, on a running Ray")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    args.work.mkdir(parents=True, exist_ok=True)
    results = {"cpus": os.cpu_count(), "load_before": load()}
    if "startup" in args.parts:
        results["startup"] = startup_part()
    if "download" in args.parts:
        shutil.rmtree(args.work / "download-1", ignore_errors=True)
        shutil.rmtree(args.work / "download-2", ignore_errors=True)
        results["download"] = download_part(args.download, args.delay, args.threads, args.work)
    if "prepare" in args.parts:
        results["prepare"] = prepare_part(args.photos, args.work, args.buckets, args.modes)
    results["load_after"] = load()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
