"""Work items on Ray: a pool of actors, each holding one :class:`~dstfuse_stream.fuser.Fuser`.

::

    driver (dstfuse-batch)                         Ray cluster (or a local runtime)
    ----------------------                         --------------------------------
    plan items, skip finished ones
    start N FuseWorker actors  ----------------->  FuseWorker: builds its Fuser once (model loaded
    hand each idle actor the next item  -------->    once per worker), run_item() per item
    ray.wait for results, refill, progress <-----  ProgressCounter actor: frames written so far

An actor takes one item at a time; the driver gives the next item to whichever actor finishes, so
long and short sequences balance themselves. A failing item comes back as a failed
:class:`~dstfuse_stream.batch.job.ItemResult`; a worker process that dies (out of memory, killed)
fails its item, is replaced once, and the job goes on. Ctrl-C kills the actors and removes the
temporaries of the items they were writing; finished outputs stay.

Ray is imported here only, lazily: ``pip install "dstfuse-stream[ray]"``. Every node needs the
package and sees the input and output paths at the same place (a shared file system).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from dstfuse_stream.batch.job import BatchSettings, FuserSpec, ItemResult, remove_temps, run_item
from dstfuse_stream.batch.plan import WorkItem
from dstfuse_stream.errors import BackendError, ConfigError, DSTFuseError, require_module

__all__ = ["require_ray", "RayOptions", "FuseWorker", "ProgressCounter", "run_on_ray"]

logger = logging.getLogger(__name__)

#: Object store of a local runtime started here: the job passes only small records through it.
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20


def require_ray() -> ModuleType:
    """``import ray``, or the package's own error saying how to install it."""
    return require_module("ray", purpose="dstfuse-batch", install='pip install "dstfuse-stream[ray]"')


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run.

    Attributes:
        address: ``None`` starts a local runtime with this machine's cores; ``"auto"`` joins the
            cluster this machine belongs to (``ray start``); ``"ray://host:10001"`` a remote one.
            An already initialised Ray (``ray.init`` by the caller) is used as it is.
        workers: number of actors (default: as many as the cluster's CPUs / GPUs allow).
        cpus_per_worker, gpus_per_worker: Ray resources of each actor.
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers: expected >= 1, got {self.workers}")
        if self.cpus_per_worker < 0 or self.gpus_per_worker < 0:
            raise ConfigError("cpus/gpus per worker: expected >= 0")


class ProgressCounter:
    """Ray actor body: frames written by all workers so far."""

    def __init__(self) -> None:
        self.frames = 0

    def add(self, frames: int) -> None:
        self.frames += frames

    def total(self) -> int:
        return self.frames


class FuseWorker:
    """Ray actor body: one Fuser, built by :meth:`setup`, used for every item this actor runs."""

    def __init__(self, name: str, spec: FuserSpec, settings: BatchSettings, token: str, progress: Any = None) -> None:
        self.name, self.spec, self.settings, self.token, self.progress = name, spec, settings, token, progress
        self.fuser: Any = None
        self.fuser_loads = self.items = self.frames = 0
        self.busy_s = 0.0

    def setup(self) -> dict[str, Any]:
        """Load the model (once); returns :meth:`stats`."""
        if self.fuser is None:
            self.fuser = self.spec.build()
            self.fuser_loads += 1
        return self.stats()

    def run(self, item: WorkItem) -> ItemResult:
        self.setup()
        on_frames = None if self.progress is None else self.progress.add.remote
        result = run_item(item, self.fuser, self.settings, token=self.token, on_frames=on_frames,
                          extra={"worker": self.name, "host": socket.gethostname(), "pid": os.getpid()})
        result.worker = self.name
        self.items += 1
        self.frames += result.frames
        self.busy_s += result.elapsed_s
        return result

    def stats(self) -> dict[str, Any]:
        return {
            "worker": self.name, "host": socket.gethostname(), "pid": os.getpid(),
            "backend": self.fuser.describe() if self.fuser is not None else None, "fuser_loads": self.fuser_loads,
            "items": self.items, "frames": self.frames, "busy_s": self.busy_s,
            "fps": self.frames / self.busy_s if self.busy_s > 0 else 0.0,
        }

    def close(self) -> None:
        if self.fuser is not None:
            self.fuser.close()
            self.fuser = None


@dataclass
class RayRun:
    """What :func:`run_on_ray` did: item results (in finishing order), per-worker stats, cluster."""

    results: list[ItemResult] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    cluster: dict[str, Any] = field(default_factory=dict)


def _init_ray(ray: ModuleType, address: str | None) -> bool:
    """Initialise Ray unless the caller did; returns whether this call started it."""
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(include_dashboard=False, logging_level=logging.WARNING, object_store_memory=LOCAL_OBJECT_STORE_BYTES)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray runtime"
        raise BackendError(f"cannot start or reach {where} ({type(exc).__name__}: {exc})") from exc
    return True


def _worker_count(ray: ModuleType, options: RayOptions, n_items: int) -> tuple[int, dict[str, float]]:
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))
    fits = [int(cpus // options.cpus_per_worker)] if options.cpus_per_worker > 0 else []
    if options.gpus_per_worker > 0:
        fits.append(int(gpus // options.gpus_per_worker))
    fit = min(fits) if fits else n_items
    if fit < 1:
        raise ConfigError(
            f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs; one worker needs {options.cpus_per_worker:g} CPUs "
            f"and {options.gpus_per_worker:g} GPUs"
        )
    if options.workers is not None and options.workers > fit:
        logger.warning("%d workers asked, but the cluster's resources fit %d at once; the rest wait", options.workers, fit)
    return max(1, min(options.workers or fit, n_items)), {"CPU": cpus, "GPU": gpus}


def _unwrap(ray: ModuleType, exc: BaseException) -> BaseException:
    """The user's error inside a Ray task error (so the CLI prints its one line)."""
    cause = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayTaskError) else None
    return cause if isinstance(cause, DSTFuseError) else exc


def run_on_ray(
    items: list[WorkItem],
    *,
    spec: FuserSpec,
    settings: BatchSettings,
    token: str,
    options: RayOptions = RayOptions(),
    progress: bool = False,
    on_result: Callable[[ItemResult], None] | None = None,
    poll_s: float = 0.5,
) -> RayRun:
    """Run ``items`` on a pool of :class:`FuseWorker` actors; see the module docstring."""
    ray = require_ray()
    started = _init_ray(ray, options.address)
    run = RayRun()
    actors: dict[str, Any] = {}
    inflight: dict[Any, tuple[str, WorkItem]] = {}
    bar = None
    try:
        n_workers, resources = _worker_count(ray, options, len(items))
        run.cluster = {"address": options.address or ("local" if started else "existing"), "resources": resources,
                       "workers": n_workers, "cpus_per_worker": options.cpus_per_worker,
                       "gpus_per_worker": options.gpus_per_worker}
        counter = ray.remote(ProgressCounter).options(num_cpus=0).remote()
        actor_cls = ray.remote(FuseWorker).options(num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker)

        def start(name: str) -> Any:
            actor = actor_cls.remote(name, spec, settings, token, counter)
            actors[name] = actor
            return actor.setup.remote()

        try:  # the first worker alone: on a node it makes the one-off ONNX export the others then reuse
            ray.get(start("w0"))
            ray.get([start(f"w{i}") for i in range(1, n_workers)])
        except ray.exceptions.RayError as exc:
            raise _unwrap(ray, exc) from None
        if progress:
            from tqdm import tqdm

            expected = [it.frames_expected for it in items]
            bar = tqdm(total=None if None in expected else sum(expected), unit="frame", dynamic_ncols=True)
        pending, spares, started_actors = deque(items), n_workers, n_workers

        def submit(name: str) -> None:
            if pending:
                item = pending.popleft()
                inflight[actors[name].run.remote(item)] = (name, item)

        for name in list(actors):
            submit(name)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=poll_s)
            if bar is not None:
                bar.update(ray.get(counter.total.remote()) - bar.n)
            for ref in ready:
                name, item = inflight.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died, or run_item re-raised
                    first = str(_unwrap(ray, exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    result = ItemResult(key=item.key, sequence=item.sequence.name, status="failed",
                                        output=str(item.output), error=f"worker {name} lost: {first}", worker=name)
                    remove_temps(item, token)
                    actors.pop(name, None)
                    if spares > 0 and isinstance(exc, ray.exceptions.RayActorError):
                        spares, started_actors = spares - 1, started_actors + 1
                        name = f"w{started_actors - 1}"
                        start(name)
                    else:
                        name = None
                run.results.append(result)
                if on_result is not None:
                    on_result(result)
                if name is not None:
                    submit(name)
            if not inflight and pending and not actors:
                run.results.extend(ItemResult(key=it.key, sequence=it.sequence.name, status="failed",
                                              output=str(it.output), error="no worker left") for it in pending)
                pending.clear()
        if bar is not None:
            bar.update(ray.get(counter.total.remote()) - bar.n)
        run.workers = ray.get([a.stats.remote() for a in actors.values()])
        ray.get([a.close.remote() for a in actors.values()])
    except KeyboardInterrupt:
        for actor in actors.values():
            ray.kill(actor, no_restart=True)
        time.sleep(0.2)  # let the killed processes go before their temporaries are removed
        for _, item in inflight.values():
            remove_temps(item, token)
        raise
    finally:
        if bar is not None:
            bar.close()
        for actor in actors.values():
            ray.kill(actor, no_restart=True)
        if started:
            ray.shutdown()
    return run
