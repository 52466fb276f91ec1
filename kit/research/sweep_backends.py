"""Where sweep tasks run: in this process, on local worker processes (joblib/loky), or on a Dask cluster.

    outcomes, partial = execute(tasks, run_task, n_jobs=2)                  # joblib, loky backend
    outcomes, partial = execute(tasks, run_task, client="127.0.0.1:8786")   # Dask

Every backend runs the same function on the same task objects and hands
back ``{task index: result}``; the caller orders the results, so they do not
depend on which worker finished first. Tasks are shipped with cloudpickle
(loky and Dask both use it), so a strategy class defined in a notebook cell
reaches the workers by value.

Progress is a ``tqdm.auto`` bar over tasks (a widget in a notebook), or a
callable ``progress(done, total)`` called after each finished task.
A ``KeyboardInterrupt`` (a kernel interrupt, or raised by that callable)
cancels what has not finished and returns what has, with ``partial=True``.
A task whose worker died is reported through ``on_failure(task, text)``.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable

__all__ = ["execute", "available_cores"]


def available_cores() -> int:
    """The cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:     # not Linux
        import joblib
        return joblib.cpu_count()


class _Progress:
    def __init__(self, progress, total: int, desc: str):
        self.callback = progress if callable(progress) else None
        self.total, self.done = total, 0
        self.bar = None
        if progress is True:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=desc, unit="task")

    def step(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def execute(tasks: list, fn: Callable, *, n_jobs: int | None = None, client=None, progress=True,
            on_failure: Callable | None = None, desc: str = "sweep") -> tuple[dict, bool]:
    """Run ``fn(task)`` for every task; return ``({task.index: result}, partial)``."""
    bar = _Progress(progress, len(tasks), desc)
    results: dict = {}
    try:
        if client is not None:
            _on_dask(tasks, fn, client, results, bar, on_failure)
        elif (n_jobs or available_cores()) == 1 or len(tasks) <= 1:
            for task in tasks:
                results[task.index] = fn(task)
                bar.step()
        else:
            _on_joblib(tasks, fn, n_jobs or available_cores(), results, bar, on_failure)
    except KeyboardInterrupt:
        return results, True
    finally:
        bar.close()
    return results, False


def _on_joblib(tasks, fn, n_jobs, results, bar, on_failure) -> None:
    from joblib import Parallel, delayed

    def indexed(task):
        return task.index, fn(task)

    parallel = Parallel(n_jobs=min(n_jobs, len(tasks)), backend="loky", return_as="generator_unordered",
                        batch_size=1)
    outputs = parallel(delayed(indexed)(task) for task in tasks)
    try:
        for index, result in outputs:
            results[index] = result
            bar.step()
    except Exception as exc:
        # fn never raises, so this is a worker that died (joblib stops the rest with it):
        # the unfinished tasks are reported as failed, the finished ones are kept.
        for task in tasks:
            if task.index not in results and on_failure is not None:
                results[task.index] = on_failure(task, f"{type(exc).__name__}: {exc}")
    finally:
        with warnings.catch_warnings():     # joblib warns that an abandoned generator stops its tasks: we mean it
            warnings.simplefilter("ignore")
            outputs.close()


def _on_dask(tasks, fn, client, results, bar, on_failure) -> None:
    from distributed import Client, as_completed

    own = isinstance(client, str)
    if own:
        client = Client(client, set_as_default=False)
    futures = {}
    try:
        submitted = client.map(fn, tasks, pure=False, key=[f"kit-{task.sweep_id}-{task.index}" for task in tasks])
        futures = {future.key: (future, task) for future, task in zip(submitted, tasks)}
        for future in as_completed(submitted, loop=client.loop):
            _, task = futures[future.key]
            if future.status == "finished":
                results[task.index] = future.result()
            elif on_failure is not None:     # a worker lost with the task, or the task cancelled elsewhere
                exc = future.exception() if future.status == "error" else None
                results[task.index] = on_failure(task, f"{type(exc).__name__}: {exc}" if exc else future.status)
            future.release()
            bar.step()
    except KeyboardInterrupt:
        client.cancel([f for f, _ in futures.values() if not f.done()])
        raise
    finally:
        if own:
            client.close()
