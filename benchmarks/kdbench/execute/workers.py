"""The worker processes of ``--executor processes[:N]``: one spawned process per group, at most N at
once, each ending when its group does, when it dies, or when its driver dies.

Not a ``ProcessPoolExecutor``: when one of a pool's workers dies the pool breaks, and every group
still in it fails with it; here a worker's death ends its own group alone, and the others go on.

A worker never outlives its driver (a killed driver must not leave workers holding their claims and
their memory): on Linux the kernel kills it when its parent dies (``PR_SET_PDEATHSIG``), and
everywhere a watchdog thread ends it once its parent's pid is no longer its parent's.
"""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing.connection import wait
from typing import Any, Callable, Iterator

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_S = 0.5  # how often the watchdog looks at its parent


class WorkerDied(RuntimeError):
    """A worker process ended without its group's result (killed, out of memory)."""


def run_in_workers(fn: Callable[[Any], Any], jobs: list, n: int) -> Iterator[tuple[Any, Any]]:
    """``fn(job)`` for each job, each in a new spawned process (spawn, not fork: a forked child of a
    process that has run torch's thread pools can hang), ``n`` at a time. Yields ``(job, result)``,
    or ``(job, exception)`` for one that raised or died, in the order they end; closing the
    generator early kills the workers still running."""
    context = multiprocessing.get_context("spawn")
    todo, live = list(jobs), {}
    try:
        while todo or live:
            while todo and len(live) < n:
                job = todo.pop(0)
                receive, send = context.Pipe(duplex=False)
                work = (f"{fn.__module__}:{fn.__qualname__}", pickle.dumps(job))  # unpickled once it watches
                proc = context.Process(target=_worker, args=(*work, send, os.getpid()), name="kdbench-worker")
                proc.start()
                send.close()  # the worker holds the only sending end: its exit reads as an end of file
                live[receive] = (proc, job)
            for conn in wait(list(live)):
                proc, job = live.pop(conn)
                yield job, _outcome(conn, proc)
    finally:
        for conn, (proc, _) in live.items():
            proc.kill()
            proc.join()
            conn.close()


def _outcome(conn, proc) -> Any:
    """What the worker sent (its result, or the exception it raised), or :class:`WorkerDied`."""
    try:
        return conn.recv()[1]
    except EOFError:  # it ended without sending anything
        proc.join()
        return WorkerDied(f"its worker process died ({_exit_reason(proc.exitcode)})")
    except Exception as exc:  # sent, but not readable here (an exception that does not unpickle)
        return WorkerDied(f"its result could not be read ({type(exc).__name__}: {exc})")
    finally:
        conn.close()
        proc.join()


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _worker(fn: str, job: bytes, conn, parent: int) -> None:
    """In the worker: end with the driver, run the job, send back what came of it. The job and its
    function come as a pickle and a name, so the heavy imports they bring (torch) come after the
    watch has begun: a driver killed while its workers start leaves none behind either."""
    end_with_parent(parent)
    try:
        module, name = fn.split(":")
        message = ("ok", getattr(importlib.import_module(module), name)(pickle.loads(job)))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the driver reports it
        os._exit(130)
    except BaseException as exc:  # the driver reports the group as crashed, with this error
        message = ("error", exc)
    try:
        conn.send(message)
    except Exception as exc:  # a result or an exception that does not pickle
        conn.send(("error", RuntimeError(f"{type(exc).__name__} while sending the result: {exc}")))
    conn.close()


def end_with_parent(parent: int) -> None:
    """Make this process end when ``parent`` (the driver that started it) dies, however it dies."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # no prctl here: the watchdog alone
            pass
    if os.getppid() != parent:  # died before the line above took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), name="kdbench-parent-watch", daemon=True).start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_S)
    os._exit(1)
