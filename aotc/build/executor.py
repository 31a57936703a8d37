"""Where translation units compile: the `Executor` interface the build pipeline submits TuJobs to,
and the local thread pool behind it (the work itself is an nvcc subprocess). A distributed executor
implements `run` by sending each job to a worker that calls aotc.build.tu_task.compile_tu.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed

from aotc.build.compile import kill_running, sigterm_interrupts
from aotc.build.tu_task import TuJob, TuResult


class Executor(ABC):
    """Runs TuJobs, yielding TuResults as they finish (any order). Must not raise for one job's
    failure (a TuResult says it); on interruption it stops its running compiles and re-raises."""

    jobs: int  # how many run at once (shown to the user)

    @abstractmethod
    def run(self, jobs: Iterable[TuJob]) -> Iterator[TuResult]: ...


class LocalExecutor(Executor):
    def __init__(self, jobs: int, compile_one: Callable[[TuJob], TuResult]):
        self.jobs = jobs
        self.compile_one = compile_one

    def run(self, jobs: Iterable[TuJob]) -> Iterator[TuResult]:
        pool = ThreadPoolExecutor(max_workers=self.jobs)
        futures = [pool.submit(self.compile_one, job) for job in jobs]
        try:
            with sigterm_interrupts():  # SIGTERM in a library caller too: the compiles are killed, not orphaned
                for fut in as_completed(futures):
                    yield fut.result()
        except BaseException:  # Ctrl-C / SIGTERM: drop queued jobs, kill running compiles, stop now
            for fut in futures:
                fut.cancel()
            kill_running()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
