"""Run discovery's jobs in forked processes, so that reading and parsing use several cores.

`ForkedJobs(workers)` is a `JobRunner` for `discover(tree, options, run_jobs=...)`. The jobs are
dealt in blocks, round-robin, to this process and `workers - 1` forked children; each child
sends its results back pickled, and they are put back in job order. Forking copies this
process, so jobs need not be picklable, only their results.

The outcome is exactly that of running the jobs in turn: a job that raises in a child, a child
that dies, or results that do not arrive make this process run the missing jobs itself, in job
order, so the exception raised is that of the lowest-numbered failing job.

Fork is only safe in a single-threaded process (a lock held by another thread stays locked in the
child): meant for the command-line tool, not for a long-running multi-threaded controller. Where
fork is not available, for one worker or for few jobs, the jobs simply run in turn here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

BLOCK = 64
"""Consecutive jobs handed to one process (neighbouring jobs read neighbouring folders)."""
MIN_JOBS = 512
"""Below this many jobs, forking costs more than it saves."""


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, like `nproc`)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class ForkedJobs:
    """A `JobRunner` over `workers` processes (this one included)."""

    def __init__(self, workers: int, *, min_jobs: int = MIN_JOBS) -> None:
        self.workers = max(1, workers)
        self.min_jobs = min_jobs

    def __call__(self, job: Callable[[int], T], count: int, /) -> list[T]:
        if self.workers == 1 or count < max(self.min_jobs, 2) or not hasattr(os, "fork"):
            return [job(index) for index in range(count)]
        shares: list[list[int]] = [[] for _ in range(min(self.workers, -(-count // BLOCK)))]
        for block, start in enumerate(range(0, count, BLOCK)):
            shares[block % len(shares)].extend(range(start, min(start + BLOCK, count)))
        done: dict[int, T] = {}
        children = []
        for share in shares[1:]:
            try:
                children.append(_start(job, share))
            except OSError:  # cannot fork now (process limit, memory): run those shares here
                break
        try:
            _run_share(job, shares[0], done)
        finally:
            for pid, reader in children:
                done.update(_collect(pid, reader))
        # Whatever is missing (a job raised, a child failed) runs here, in order.
        return [done[index] if index in done else job(index) for index in range(count)]


def _run_share(job: Callable[[int], T], share: list[int], done: dict[int, T]) -> None:
    """Run `share` in order into `done`, stopping at the first job that raises."""
    for index in share:
        try:
            done[index] = job(index)
        except Exception:
            return


def _start(job: Callable[[int], Any], share: list[int]) -> tuple[int, int]:
    """Fork a child that runs `share` and writes `{index: result}` to a pipe: (pid, read end)."""
    import pickle  # noqa: PLC0415 - only when jobs are forked (not for few); the child has it

    reader, writer = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(reader)
        os.close(writer)
        raise
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.close(reader)
            results: dict[int, Any] = {}
            _run_share(job, share, results)
            data = pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(writer, "wb") as pipe:
                pipe.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    return pid, reader


def _collect(pid: int, reader: int) -> dict[int, Any]:
    """The results a child sent; nothing if it failed (its jobs then run in this process)."""
    import pickle  # noqa: PLC0415 - see _start()

    try:
        with os.fdopen(reader, "rb") as pipe:
            data = pipe.read()
    finally:
        _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not data:
        return {}
    try:
        results: dict[int, Any] = pickle.loads(data)  # noqa: S301 - our own child's output
    except Exception:
        return {}
    return results
