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

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from dstfuse_stream.batch.job import BatchSettings, FuserSpec, ItemResult, remove_temps, run_item
from dstfuse_stream.batch.plan import WorkItem
from dstfuse_stream.errors import BackendError, ConfigError, DSTFuseError, require_module

__all__ = ["require_ray", "RayOptions", "FuseWorker", "ProgressCounter", "Terminated", "run_on_ray"]

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
        workers: number of actors (default and at most: as many as the cluster's CPUs / GPUs allow).
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


class Terminated(KeyboardInterrupt):
    """SIGTERM during :func:`run_on_ray`: the same clean stop as Ctrl-C (``signum`` says which)."""

    signum = signal.SIGTERM


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Ray's driver installs a SIGTERM handler that exits at once; ours stops the job cleanly instead
    (Ray may re-raise the interrupt as a plain ``KeyboardInterrupt``: it becomes :class:`Terminated`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        received.append(signum)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except KeyboardInterrupt as exc:
        if received and not isinstance(exc, Terminated):
            raise Terminated from exc
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    if options.workers is not None and options.workers > fit:  # more would wait forever for resources
        logger.warning("%d workers asked, but the cluster's resources fit %d; using %d", options.workers, fit, fit)
    return max(1, min(options.workers or fit, fit, n_items)), {"CPU": cpus, "GPU": gpus}


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
    try:
        with _sigterm_as_interrupt():
            return _run_pool(ray, items, spec=spec, settings=settings, token=token, options=options,
                             progress=progress, on_result=on_result, poll_s=poll_s, started=started)
    finally:
        if started:
            ray.shutdown()


class _ActorPool:
    """The driver's view of the workers: start them, hand out items, replace a dead one (once each)."""

    def __init__(self, ray: ModuleType, actor_cls: Any, items: list[WorkItem], *, n_workers: int, token: str, counter: Any,
                 spec: FuserSpec, settings: BatchSettings) -> None:
        self.ray, self.actor_cls, self.token, self.counter = ray, actor_cls, token, counter
        self.spec, self.settings = spec, settings
        self.pending = deque(items)
        self.actors: dict[str, Any] = {}
        self.inflight: dict[Any, tuple[str, WorkItem]] = {}
        self.spares, self.started = n_workers, 0

    def start(self) -> tuple[str, Any]:
        """A new actor and the reference of its :meth:`FuseWorker.setup` (model load)."""
        name = f"w{self.started}"
        self.started += 1
        actor = self.actor_cls.remote(name, self.spec, self.settings, self.token, self.counter)
        self.actors[name] = actor
        return name, actor.setup.remote()

    def submit(self, name: str) -> None:
        if self.pending:
            item = self.pending.popleft()
            self.inflight[self.actors[name].run.remote(item)] = (name, item)

    def lost(self, name: str, item: WorkItem, exc: BaseException) -> tuple[ItemResult, str | None]:
        """The item's worker died (or re-raised): a failed result, and a replacement worker if one is left."""
        text = str(_unwrap(self.ray, exc)).strip()
        result = _failed(item, f"worker {name} lost: {text.splitlines()[0] if text else type(exc).__name__}")
        result.worker = name
        remove_temps(item, self.token)
        self.actors.pop(name, None)
        if self.spares > 0 and isinstance(exc, self.ray.exceptions.RayActorError):
            self.spares -= 1
            return result, self.start()[0]
        return result, None

    def kill(self) -> None:
        for actor in self.actors.values():
            self.ray.kill(actor, no_restart=True)


def _failed(item: WorkItem, error: str) -> ItemResult:
    return ItemResult(key=item.key, sequence=item.sequence.name, status="failed", output=str(item.output), error=error)


def _run_pool(
    ray: ModuleType,
    items: list[WorkItem],
    *,
    spec: FuserSpec,
    settings: BatchSettings,
    token: str,
    options: RayOptions,
    progress: bool,
    on_result: Callable[[ItemResult], None] | None,
    poll_s: float,
    started: bool,
) -> RayRun:
    n_workers, resources = _worker_count(ray, options, len(items))
    run = RayRun(cluster={"address": options.address or ("local" if started else "existing"), "resources": resources,
                          "workers": n_workers, "cpus_per_worker": options.cpus_per_worker,
                          "gpus_per_worker": options.gpus_per_worker})
    counter = ray.remote(ProgressCounter).options(num_cpus=0).remote()
    actor_cls = ray.remote(FuseWorker).options(num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker)
    pool = _ActorPool(ray, actor_cls, items, n_workers=n_workers, token=token, counter=counter, spec=spec, settings=settings)
    bar = None

    def finish(result: ItemResult) -> None:
        run.results.append(result)
        if on_result is not None:
            on_result(result)

    try:
        try:  # the first worker alone: on a node it makes the one-off ONNX export the others then reuse
            ray.get(pool.start()[1])
            ray.get([pool.start()[1] for _ in range(1, n_workers)])
        except ray.exceptions.RayError as exc:
            raise _unwrap(ray, exc) from None
        if progress:
            from tqdm import tqdm

            expected = [it.frames_expected for it in items]
            bar = tqdm(total=None if None in expected else sum(expected), unit="frame", dynamic_ncols=True)
        for name in list(pool.actors):
            pool.submit(name)
        while pool.inflight:
            ready, _ = ray.wait(list(pool.inflight), num_returns=1, timeout=poll_s)
            if bar is not None:
                bar.update(ray.get(counter.total.remote()) - bar.n)
            for ref in ready:
                name, item = pool.inflight.pop(ref)
                try:
                    result, next_name = ray.get(ref), name
                except ray.exceptions.RayError as exc:  # the worker died, or run_item re-raised
                    result, next_name = pool.lost(name, item, exc)
                finish(result)
                if next_name is not None:
                    pool.submit(next_name)
        for item in pool.pending:  # every worker was lost
            finish(_failed(item, "no worker left"))
        if bar is not None:
            bar.update(ray.get(counter.total.remote()) - bar.n)
        run.workers = ray.get([a.stats.remote() for a in pool.actors.values()])
        ray.get([a.close.remote() for a in pool.actors.values()])
    except KeyboardInterrupt:
        pool.kill()
        time.sleep(0.2)  # let the killed processes go before their temporaries are removed
        for _, item in pool.inflight.values():
            remove_temps(item, token)
        raise
    finally:
        if bar is not None:
            bar.close()
        pool.kill()
    return run
