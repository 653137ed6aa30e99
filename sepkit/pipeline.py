"""The pipelined streamed path: reading ahead and writing behind in worker threads, the network in the caller's.

:func:`sepkit.stream.separate_file` (``pipeline=True``, the default of ``Separator.separate_file`` and
``sepkit-separate``) runs three stages at once: a reader thread reads the next block of the input and resamples
it to the model's rate (:class:`Prefetch`, one block ahead), the calling thread computes the features, runs the
network and makes the masks, and a writer thread reconstructs each finished block (mask x STFT, inverse STFT),
resamples it back and writes it (:class:`WriteBehind`, at most ``depth`` blocks queued, so memory stays bounded).
The stages schedule the serial path's own calls (a block read, a block reconstructed and written) in the same
order on the same values, so outputs are bitwise those of ``pipeline=False``. soxr, libsndfile (cffi), numpy and
torch release the GIL in their work, so on a second idle core the work around the network overlaps with it:
wall time drops, CPU time does not (the same work is done, plus the threads' hand-offs).

When it is on (``pipeline=None``, the default, is :func:`auto`): only while torch's intra-op threads leave a core
free (``torch.get_num_threads()`` below the cores this process may use). With as many torch threads as cores the
workers take turns with the network's OpenMP team, whose threads then wait for each other at every barrier:
bench/bench_e2e.py measured the pipelined path slower than the serial one with 2 threads on 2 cores
(bench/RESULTS.md, "Pipelined offline path"). ``pipeline=True`` forces it, ``False`` turns it off.

Worker threads run torch with one OpenMP thread (:func:`single_threaded_torch`): the network keeps the caller's
``torch.get_num_threads()``, and no worker starts a second team of OpenMP threads that spin beside it.

An error in a worker (a failing write, a truncated input) is raised in the calling thread, as the same exception,
where the serial path would meet it (the reader's) or at the next hand-off (the writer's); the writer then skips
what is queued and the caller discards the temporary outputs (:meth:`WriteBehind.discard`).
"""
import ctypes
import functools
import os
import queue
import threading

import torch

__all__ = ["DEPTH", "Prefetch", "Worker", "WriteBehind", "Stages", "auto", "single_threaded_torch"]

DEPTH = 2  # blocks queued between two stages (besides the one each is working on)
_END = object()


def _symbol(name):
    """A C function of the loaded torch libraries (OpenMP, MKL) by name, or None."""
    for lib in (None, os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")):
        try:
            return getattr(ctypes.CDLL(lib), name)
        except (AttributeError, OSError):
            pass
    return None


def auto():
    """Whether the pipeline pays here: torch's threads (this thread's ``torch.get_num_threads()``) leave a core free."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return torch.get_num_threads() < cores


def single_threaded_torch():
    """Make this (worker) thread run torch's intra-op work on one thread, leaving the process's setting as it is.

    torch's OpenMP build keeps the thread count per thread (``omp_get_max_threads`` and MKL's thread-local count),
    set from the process's on a thread's first torch call; ``torch.set_num_threads(1)`` here would also change the
    process-wide value that later threads start from. So: the first call (torch's per-thread setup), then this
    thread's OpenMP and MKL counts set to 1 through their C functions. Without them (another build) nothing changes.
    """
    torch.get_num_threads()  # torch's lazy per-thread init: it would overwrite what is set below
    for name in ("omp_set_num_threads", "MKL_Set_Num_Threads_Local"):  # MKL's C name (lower case: Fortran, by pointer)
        fn = _symbol(name)
        if fn is not None:
            fn.argtypes = [ctypes.c_int]
            fn(1)


class Worker:
    """One thread that runs submitted calls in order, at most ``depth`` waiting (:meth:`submit` blocks beyond).

    The first call that raises stops the work: the calls still queued are skipped, and the exception is raised in
    the submitting thread by the next :meth:`submit` or by :meth:`finish`.
    """

    def __init__(self, name, depth=DEPTH):
        self.jobs, self.error, self.stopped = queue.Queue(max(1, int(depth))), None, False
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def _loop(self):
        single_threaded_torch()
        with torch.inference_mode():
            while True:
                job = self.jobs.get()
                if job is _END:
                    return
                if self.error is not None or self.stopped:
                    continue
                try:
                    job()
                except BaseException as exc:  # raised again in the submitting thread
                    self.error = exc

    def _raise(self):
        if self.error is not None:
            raise self.error

    def submit(self, fn, *args):
        """Queue ``fn(*args)``; raises the error of an earlier call instead."""
        self._raise()
        self.jobs.put(functools.partial(fn, *args))

    def finish(self):
        """Wait until every queued call has run; raise the first one's error."""
        if self.thread.is_alive():
            self.jobs.put(_END)
            self.thread.join()
        self._raise()

    def abort(self):
        """Skip the queued calls and wait for the running one to end (no exception)."""
        self.stopped = True
        if self.thread.is_alive():
            self.jobs.put(_END)  # the skipped calls leave the queue at once: this put does not wait long
            self.thread.join()


class WriteBehind:
    """The writer stage around an output object ``out`` (``out(est, last)``, ``out.commit(...)``, ``out.discard()``,
    :class:`sepkit.stream._Outputs`): ``self(est, last)`` and :meth:`later` run in a :class:`Worker`, in order;
    :meth:`commit` waits for them (raising a failed one's error) and commits, :meth:`discard` stops them first."""

    def __init__(self, out, depth=DEPTH):
        self.out, self.worker = out, Worker("sepkit-writer", depth)

    def __call__(self, est, last):
        self.worker.submit(self.out, est, last)

    def later(self, fn, *args):
        """Run ``fn(out, *args)`` in the writer thread (a block's reconstruction and its write, as one call)."""
        self.worker.submit(fn, self.out, *args)

    def commit(self, *args, **kwargs):
        self.worker.finish()
        return self.out.commit(*args, **kwargs)

    def discard(self):
        self.worker.abort()
        self.out.discard()


class Prefetch:
    """Iterator over the items of generator ``items``, computed up to ``depth`` ahead in a thread (started by the
    first ``next``: a pass that never reads reads nothing).

    An exception of ``items`` is raised by ``next`` at its place in the sequence. :meth:`close` stops the thread
    (the generator is closed in it, so what it opened is closed) and drops what was read ahead.
    """

    def __init__(self, items, depth=1, name="sepkit-reader"):
        self.q, self.stop, self.done = queue.Queue(max(1, int(depth))), threading.Event(), False
        self.items, self.thread = items, threading.Thread(target=self._loop, args=(items,), name=name, daemon=True)

    def _loop(self, items):
        single_threaded_torch()
        try:
            with torch.inference_mode():
                for item in items:
                    if self.stop.is_set():
                        return
                    self.q.put((item, None))
                    if self.stop.is_set():
                        return
            self.q.put((_END, None))
        except BaseException as exc:  # raised again by __next__
            self.q.put((_END, exc))
        finally:
            getattr(items, "close", lambda: None)()

    def __iter__(self):
        return self

    def __next__(self):
        if self.done:
            raise StopIteration
        if self.thread.ident is None:
            self.thread.start()
        item, exc = self.q.get()
        if item is _END:
            self.done = True
            if exc is not None:
                raise exc
            raise StopIteration
        return item

    def close(self):
        self.stop.set()
        if self.thread.ident is None:  # never started
            getattr(self.items, "close", lambda: None)()
        while self.thread.is_alive():
            try:  # make room for a put that waits: the thread then sees the stop
                self.q.get_nowait()
            except queue.Empty:
                pass
            self.thread.join(0.01)
        self.done = True


class Stages:
    """The worker threads of one separation (``enabled``: the pipeline is on; None: :func:`auto`), closed together at
    the end."""

    def __init__(self, enabled=None):
        self.enabled, self.open = bool(auto() if enabled is None else enabled), []
        if self.enabled:
            torch.get_num_threads()  # the caller's per-thread torch setup, before any worker starts

    def prefetch(self, items, depth=1):
        """``items`` read ahead in a thread (:class:`Prefetch`), or ``items`` itself when not enabled."""
        if not self.enabled:
            return items
        p = Prefetch(items, depth)
        self.open.append(p)
        return p

    def write_behind(self, out, depth=DEPTH):
        """``out`` behind a writer thread (:class:`WriteBehind`), or ``out`` itself when not enabled."""
        return WriteBehind(out, depth) if self.enabled else out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        while self.open:
            self.open.pop().close()
