#!/usr/bin/env python3
"""Run a command as one job or as an array of jobs on this machine, with Kaldi's run.pl interface.

Usage:
  utils/run.py [options] JOB=1:4 exp/x/log/feats.JOB.log command args ... JOB ...
  utils/run.py [options] exp/x/log/train.log command args ...

Every occurrence of JOB (or the name given before '=') in the log path and in the command is
replaced by the job index. The command is run with `bash -c`: pass it as one quoted string
("a | b > c"), or as several words where shell operators are escaped (a \\| b), as with run.pl;
several words are joined like run.pl does (words with whitespace get quoted). Each job's stdout
and stderr go to its log, which starts with '# <command>' and '# Started at <date>' and ends with
'# Accounting: time=<s> threads=<n>' and '# Ended (code <n>) at <date>'.

Options:
  --max-jobs-run N   run at most N jobs at once (default: all)
  --num-threads N    threads per job (only recorded in the log on this backend)
  --gpu N, --mem 4G, --time 1:00:00
                     accepted for compatibility with utils/slurm.py, ignored here
Exit status: 0 when every job succeeded, else 1 with '<prog>: k/n jobs failed, log is in <log>'
naming the first failing job's log on stderr. Standard library only (no sepkit import).

Jobs die with the runner: they stay in its process group (Ctrl-C, or a kill of the stage's process
group, reaches them too), and each job is watched by a small process of its own (this script, outside
that process group) that SIGKILLs the job and every process it started as soon as the runner is gone,
even by SIGKILL, or by a SIGKILL of the stage's process group: on Linux the watcher adopts the orphans of
the job (child subreaper), so what left the job's process group or session (torchrun's workers, a
shell's background children) is found too. A SIGTERM, SIGINT or SIGHUP of the runner is passed on to
every running job and the processes it started (SIGKILL after 5 s), then the runner exits with 128 +
the signal number, saying so. A signal ignored when the runner starts (nohup, a background job) stays
ignored.
"""
import ctypes
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

OPTIONS = {  # option -> (attribute, converter)
    "--max-jobs-run": ("max_jobs_run", "positive"),
    "--num-threads": ("num_threads", "positive"),
    "--gpu": ("gpu", "nonnegative"),
    "--mem": ("mem", "string"),
    "--time": ("time", "string"),
}
_RANGE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\d+)(?::(\d+))?$")


class UsageError(Exception):
    pass


class Request:
    """A parsed command line: options, job range, log template and shell command."""

    def __init__(self):
        self.max_jobs_run = None
        self.num_threads = None
        self.gpu = 0
        self.mem = None
        self.time = None
        self.jobname = None
        self.start = self.end = 1
        self.log_template = None
        self.command = None

    def jobs(self):
        """[(job index, log path, command)] with the job name substituted."""
        out = []
        for jobid in range(self.start, self.end + 1):
            if self.jobname is None:
                out.append((jobid, self.log_template, self.command))
            else:
                sub = str(jobid)
                out.append((jobid, self.log_template.replace(self.jobname, sub),
                            self.command.replace(self.jobname, sub)))
        return out


def join_command(words):
    """The shell command for the command words: one word is used verbatim, several are joined
    as Kaldi's run.pl does (words without whitespace as they are, others quoted)."""
    if len(words) == 1:
        return words[0]
    parts = []
    for word in words:
        if word and not re.search(r"\s", word):
            parts.append(word)
        elif '"' in word:
            parts.append("'" + word + "'")
        else:
            parts.append('"' + word + '"')
    return " ".join(parts)


def parse_command_line(argv):
    """Parse run.pl-style arguments into a :class:`Request`; raises UsageError."""
    req = Request()
    args = list(argv)
    while args and args[0].startswith("--"):
        opt = args.pop(0)
        if "=" in opt:
            opt, value = opt.split("=", 1)
        elif args:
            value = args.pop(0)
        else:
            raise UsageError(f"option {opt} needs a value")
        if opt not in OPTIONS:
            raise UsageError(f"unknown option {opt} (known: {', '.join(OPTIONS)})")
        attr, kind = OPTIONS[opt]
        if kind != "string":
            if not value.isdigit() or (kind == "positive" and int(value) == 0):
                raise UsageError(f"option {opt} needs a {kind} integer, got {value!r}")
            value = int(value)
        setattr(req, attr, value)
    if args:
        match = _RANGE.match(args[0])
        if match:
            args.pop(0)
            req.jobname = match.group(1)
            req.start = int(match.group(2))
            req.end = int(match.group(3) if match.group(3) is not None else match.group(2))
            if req.end < req.start:
                raise UsageError(f"empty job range {match.group(0)}")
    if len(args) < 2:
        raise UsageError("expected a log file and a command")
    req.log_template, words = args[0], args[1:]
    req.command = join_command(words)
    if req.jobname is None and "JOB" in req.log_template:
        raise UsageError(f"log file {req.log_template} contains JOB but no JOB=a:b range was given")
    if req.jobname is not None and req.start != req.end and req.jobname not in req.log_template:
        raise UsageError(f"{req.end - req.start + 1} jobs would write one log file "
                         f"{req.log_template}: put {req.jobname} in its name")
    return req


def now():
    return time.strftime("%a %b %d %H:%M:%S %Z %Y")


def exit_code(returncode):
    """Shell-style exit code: 128 + N for a process killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def log_trailer(seconds, threads, code):
    return f"# Accounting: time={int(round(seconds))} threads={threads}\n# Ended (code {code}) at {now()}\n"


class Interrupted(KeyboardInterrupt):
    """A forwarded signal (SIGTERM, SIGINT, SIGHUP) stopped the runner."""

    def __init__(self, signum=signal.SIGINT):
        super().__init__(signum)
        self.signum = signum


FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_GRACE = 5.0  # seconds between the forwarded signal and SIGKILL
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
WATCH = "--watch-job"  # run.py WATCH FD PGID COMMAND...: the watcher of one job (see watch_job)
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def _watched(argv, pipe_fd, then=None):
    """The command line of the watcher of the job ``argv`` (run.py WATCH FD PGID [--then CMD] argv...)."""
    here = os.path.abspath(__file__)
    then = [] if then is None else ["--then", then]
    return [sys.executable or "python3", "-S", here, WATCH, str(pipe_fd), str(os.getpgrp())] + then + list(argv)


def _own_process_group():
    """A preexec_fn: the watcher leaves the runner's process group, so that a kill of that group
    (the job's too) does not reach it."""
    os.setpgid(0, 0)


def _reap(pid, status):
    """Reap every ended child (the job, and orphans adopted as a subreaper); returns the wait status of
    ``pid`` when it has ended (else ``status``)."""
    while True:
        try:
            ended, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if ended == 0:
            return status
        if ended == pid:
            status = st


def _kill_descendants():
    """SIGKILL every live descendant of this process (adopted orphans included), until none is left."""
    me = os.getpid()
    for _ in range(200):
        left = [p for p in _process_tree([me]) if p != me and _alive(p)]
        if not left:
            return
        _kill(left, signal.SIGKILL)
        _reap(-1, None)
        time.sleep(0.01)


def watch_job(argv):
    """The watcher of one job: ``run.py WATCH FD PGID [--then CMD] COMMAND...`` runs COMMAND in the
    process group PGID (the runner's) and exits with its code. FD is the read end of a pipe whose write
    end only the runner holds: when it ends, the runner is gone (whatever killed it), and the watcher
    SIGKILLs the job and everything it started, runs the shell command CMD if given (utils/slurm.py:
    scancel the job), then exits with 137. On Linux the watcher is a child subreaper: the
    orphans of the job's processes (torchrun's workers when torchrun was killed, which run in sessions
    of their own) are its children then, and are found. The forwarded signals (SIGTERM, SIGINT, SIGHUP)
    do not stop the watcher: the runner sends them to the job, whose code the watcher then returns."""
    if len(argv) < 3 or not argv[0].isdigit() or not argv[1].isdigit():
        sys.stderr.write(f"run.py {WATCH}: expected FD PGID COMMAND...\n")
        return 2
    runner_fd, pgid, command = int(argv[0]), int(argv[1]), argv[2:]
    then = None
    if command[0] == "--then":
        then, command = command[1], command[2:]
    if not command:
        sys.stderr.write(f"run.py {WATCH}: no command\n")
        return 2
    os.set_inheritable(runner_fd, False)
    if _prctl is not None:
        _prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    wake_r, wake_w = os.pipe()  # woken by every signal: SIGCHLD (an ended child), the forwarded ones
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    for signum in FORWARDED:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # ignored (nohup): the job ignores it too
            signal.signal(signum, lambda *_: None)  # a handler, not SIG_IGN: the job gets the default
    watcher = os.getpid()
    pid = os.fork()
    if pid == 0:  # the job
        try:
            try:
                os.setpgid(0, pgid)
            except OSError:
                pass  # the runner's group is gone: the runner is dead, the watcher stops this job at once
            if _prctl is not None:
                _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != watcher:
                os._exit(128 + signal.SIGKILL)
            os.execvp(command[0], command)
        except OSError as exc:
            os.write(2, f"run.py: cannot run {command[0]}: {exc.strerror or exc}\n".encode())
        os._exit(127)
    status, stopping = None, False
    while status is None:
        ready, _, _ = select.select([runner_fd, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
        if runner_fd in ready:
            if not os.read(runner_fd, 1):  # end of file: the runner is gone
                _orphaned(then)
                return 128 + signal.SIGKILL
            stopping = True  # a byte: the runner stops the job itself (Children.stop)
        status = _reap(pid, status)
    # A job killed by a signal that the runner did not send may have died with the runner (a kill of the
    # stage's process group): its orphans, adopted here, are stopped when the runner's end follows soon.
    wait = 1.0 if os.WIFSIGNALED(status) and not stopping else 0
    ready, _, _ = select.select([runner_fd], [], [], wait)
    if ready and not os.read(runner_fd, 1):
        _orphaned(then)
    return exit_code(os.waitstatus_to_exitcode(status))


def _orphaned(then):
    """The runner is gone: stop what is left of the job, then run ``then`` (a shell command) if any."""
    _kill_descendants()
    if then:
        for signum in FORWARDED + (signal.SIGCHLD,):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, signal.SIG_DFL)
        try:
            subprocess.run(["bash", "-c", then], stdin=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            sys.stderr.write(f"run.py: {then}: {exc}\n")


def _process_tree(pids):
    """``pids`` and all their descendants (from /proc; ``pids`` alone where there is none)."""
    children = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        entries = []
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _alive(pid):
    """True while ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        if os.path.isdir("/proc/self"):
            return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _kill(pids, signum):
    for pid in pids:
        try:
            os.kill(pid, signum)
        except OSError:
            pass


class Children:
    """The processes a backend starts (one per running job), to stop them on an interrupt."""

    def __init__(self):
        self.lock = threading.Lock()
        self.procs = set()
        self.closed = False

    def start(self, argv, then=None, **kwargs):
        """``subprocess.Popen`` of ``argv`` under its watcher (:func:`watch_job`), which stops it and all
        it started when the runner dies, then runs the shell command ``then`` if given; None once closed.
        Call ``finished(proc)`` after waiting for it."""
        with self.lock:
            if self.closed:
                return None
            read_fd, write_fd = os.pipe()  # the write end stays here only: its end is the runner's death
            try:
                proc = subprocess.Popen(_watched(argv, read_fd, then), pass_fds=(read_fd,),
                                        preexec_fn=_own_process_group, **kwargs)
            except BaseException:
                os.close(write_fd)
                raise
            finally:
                os.close(read_fd)
            proc.runner_pipe = write_fd
            self.procs.add(proc)
            return proc

    def finished(self, proc):
        with self.lock:
            self.procs.discard(proc)
            os.close(proc.runner_pipe)

    def close(self):
        with self.lock:
            self.closed = True
            return [p for p in self.procs if p.poll() is None]

    def stop(self, signum, grace=STOP_GRACE):
        """Start nothing more; send ``signum`` to the running processes and their descendants, and
        SIGKILL what is left of them after ``grace`` seconds. Returns how many were running."""
        procs = self.close()
        with self.lock:  # tell the watchers that the runner stops the jobs (not a runner's death)
            for proc in procs:
                if proc in self.procs:  # its pipe is open (finished() closes it under the lock)
                    try:
                        os.write(proc.runner_pipe, b"s")
                    except OSError:
                        pass
        tree = _process_tree([p.pid for p in procs])
        _kill(tree, signum)
        deadline = time.monotonic() + grace
        while any(_alive(pid) for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [p.pid for p in procs if _alive(p.pid)]
        _kill([pid for pid in set(tree) | set(_process_tree(left)) if _alive(pid)], signal.SIGKILL)
        return len(procs)


class JobSet:
    """Run ``jobs`` ([(jobid, log, command)]) with at most ``parallel`` at once.

    ``run_one(jobid, log, command)`` returns the job's exit code. A SIGTERM, SIGINT or SIGHUP
    calls ``cancel(signum)`` on the backend, which must stop what is still running and return a
    few words saying what it did; :class:`Interrupted` is raised with the note.
    """

    def __init__(self, backend, parallel):
        self.backend = backend
        self.parallel = parallel

    def run(self, jobs):
        codes = {}
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.parallel or len(jobs), len(jobs))))
        previous = {}
        if _main_thread():
            for signum in FORWARDED:
                if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup'ed or background: keep
                    previous[signum] = signal.signal(signum, _raise_interrupt)
        try:
            futures = {pool.submit(self.backend.run_one, *job): job for job in jobs}
            for future, job in futures.items():
                codes[job[0]] = future.result()
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            for sig in previous:  # a second signal must not interrupt the stopping
                signal.signal(sig, signal.SIG_IGN)
            pool.shutdown(wait=False, cancel_futures=True)
            interrupted = Interrupted(signum)
            interrupted.note = self.backend.cancel(signum)
            raise interrupted from None
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        pool.shutdown(wait=True)
        return codes


def _main_thread():
    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum, frame):
    raise Interrupted(signum)


class LocalBackend:
    """Runs each job as ``bash -c <command>`` on this machine."""

    def __init__(self, req, prog):
        self.req = req
        self.prog = prog
        self.children = Children()

    def run_one(self, jobid, log, command):
        threads = self.req.num_threads or 1
        if self.children.closed:
            return 130
        try:
            os.makedirs(os.path.dirname(log) or ".", exist_ok=True)
            f = open(log, "w")
        except OSError as exc:
            sys.stderr.write(f"{self.prog}: cannot write log {log}: {exc.strerror or exc}\n")
            return 1
        with f:
            f.write(f"# {command}\n# Started at {now()}\n")
            f.flush()
            start = time.time()
            try:
                proc = self.children.start(["bash", "-c", command], stdout=f, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL)
            except OSError as exc:
                f.write(f"{self.prog}: cannot start bash: {exc}\n")
                code = 127
            else:
                code = 130 if proc is None else exit_code(proc.wait())
                if proc is not None:
                    self.children.finished(proc)
            f.write(log_trailer(time.time() - start, threads, code))
        return code

    def cancel(self, signum):
        return f"stopped {self.children.stop(signum)} running job(s)"


def report(prog, jobs, codes):
    """Print the failure line; return the exit status (0 or 1)."""
    failed = [(jobid, log) for jobid, log, _ in jobs if codes.get(jobid, 1) != 0]
    if not failed:
        return 0
    sys.stderr.write(f"{prog}: {len(failed)}/{len(jobs)} jobs failed, log is in {failed[0][1]}\n")
    return 1


def main_with_backend(argv, prog, make_backend, usage):
    try:
        req = parse_command_line(argv)
    except UsageError as exc:
        sys.stderr.write(f"{prog}: {exc}\n{usage}")
        return 1
    jobs = req.jobs()
    backend = make_backend(req, prog)
    try:
        codes = JobSet(backend, req.max_jobs_run).run(jobs)
    except Interrupted as exc:
        sys.stderr.write(f"{prog}: interrupted by {signal.Signals(exc.signum).name}; {exc.note}\n")
        return 128 + exc.signum
    return report(prog, jobs, codes)


def usage_text(doc):
    """The 'Usage:' paragraph of a script's docstring, for error messages."""
    block = doc.split("\n\n")[1] if doc.count("\n\n") >= 1 else doc
    return block.rstrip("\n") + "\n(--help for details)\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == WATCH:
        return watch_job(argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(__doc__)
        return 0 if argv else 1
    return main_with_backend(argv, "run.py", LocalBackend, usage_text(__doc__))


if __name__ == "__main__":
    sys.exit(main())

