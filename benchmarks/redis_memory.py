"""Redis memory per video: the queue's messages, the ledger's entries and the results, measured.

Starts a real ``redis-server`` (the embedded one of ``--local``), queues ``--videos`` videos of one
run with the producer's own code (``enqueue_videos``: a claim and a task message each), then ends
each as a worker does (the message taken off the queue, ``mark_started``, ``mark_done`` with a
worker's summary, the result stored by Celery's Redis backend) and reads ``used_memory`` after
each phase. Names are XD-Violence-like ids under an ``s3://`` prefix (long paths, the costly case).

Run from the repository root::

    PYTHONPATH=. .venv/bin/python benchmarks/redis_memory.py [--videos 20000]
"""

from __future__ import annotations

import argparse
import platform

import redis

from vfx_tasks.extract.recipe import Recipe
from vfx_tasks.queue.app import create_app
from vfx_tasks.queue.job import Run
from vfx_tasks.queue.ledger import Ledger
from vfx_tasks.queue.processes.redis_server import RedisServer
from vfx_tasks.queue.producer.enqueue import enqueue_videos
from vfx_tasks.settings import Settings
from vfx_tasks.sources.base import VideoItem


def used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=20_000)
    args = parser.parse_args()
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        settings = Settings.from_env({}, broker_url=server.url)
        app = create_app(settings, producer_only=True)
        ledger = Ledger.from_url(server.url)
        recipe = Recipe(model="i3d", crop_type="5-crop")
        run = Run.create("s3://datasets-bucket/features/xd-violence/i3d", recipe)
        names = [f"test/Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6_{i:07d}" for i in range(args.videos)]
        items = [VideoItem(name, f"s3://datasets-bucket/videos/xd-violence/{name}.mp4") for name in names]
        start = used(client)
        enqueue_videos(app, ledger, run, items)
        queued = used(client)
        queue_key = settings.queue_name
        backend = create_app(settings).backend
        while (message := client.lpop(queue_key)) is not None:
            del message  # a worker took it and acknowledged it
        for item in items:
            ledger.mark_started(run.run_id, item.relative_id, "gpu0@gpubox")
            summary = {"relative_id": item.relative_id, "shape": [12, 5, 2048], "num_frames": 750,
                       "output": f"{run.output_dir}/{item.relative_id}.npy", "fps": 24.0, "seconds": 41.3,
                       "worker": "gpu0@gpubox"}
            ledger.mark_done(run.run_id, item.relative_id, summary)
            backend.store_result(run.task_id(item.relative_id), summary, "SUCCESS")
        done = used(client)
        version = client.info("server")["redis_version"]
    per_queued, per_done = (queued - start) / args.videos, (done - start) / args.videos
    print(f"redis-server {version}, {platform.machine()}, {args.videos:,} videos")
    print(f"queued (message + claim):            {per_queued:7.0f} bytes/video")
    print(f"done (ledger summary + result):      {per_done:7.0f} bytes/video")
    million = 1e6 / 2**30
    print(f"a million videos: {per_queued * million:.2f} GiB queued, {per_done * million:.2f} GiB done")


if __name__ == "__main__":
    main()
