"""Watching and stopping a job whose workers may be on other machines (pipeline/runners.py).

Such workers cannot send progress to the launcher's loopback address nor see a file on its disk.
So, for a run on a portable runner (Flink, Spark, a job server with EXTERNAL, DOCKER or PROCESS
workers) or any runner not known to be local, except Dataflow which keeps its own path:

- progress comes from the runner's metrics, polled like Dataflow's; where the runner has none
  while the job runs (Beam's embedded job server gives counters only at the end), the progress
  line says so, with the job's state and how many worker processes have started;
- the workers leave one object each under `<rejects>/live-<run id>/` when they start: a job
  whose workers never come up is named within NO_WORKER_SECONDS, not after minutes of zeros;
- the first SIGINT/SIGTERM writes `<rejects>/live-<run id>/stop`, which the workers look for every
  few seconds (transforms/progress.py): they stop reading and sending, and the job ends with
  what it has, recorded for --resume as a local run's. If it has not ended within
  --segment_timeout + STOP_MARGIN seconds, the job is cancelled through the runner
  (`PipelineResult.cancel()`). Should even that not return (a runner that does not answer, a
  submission still under way), the launcher leaves on its own at --segment_timeout + 28 s: the
  command always ends within --segment_timeout + 30 s of the first signal.
"""
import os
import threading
import time
from typing import Callable, Optional

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions

from pipeline.cli import EXIT_SIGNAL_BASE, PROG, stop_reason
from pipeline.progress import ProgressMonitor, StopOnSignal, dataflow_poll
from pipeline.runners import classify
from transforms.progress import WORKER_PREFIX, LiveChannel

STOP_MARGIN = 15.0        # after --segment_timeout: the workers' next look at the marker, flushing
CANCEL_SECONDS = 10.0     # how long the runner's cancel may take before the command leaves anyway
NO_WORKER_SECONDS = 30.0  # a job with no worker process started by then gets a line saying so
LEAVE_MARGIN = 3.0        # after the stop margin and the cancel: the launcher leaves regardless
LIVE_FOLDER = 'live-'


class JobCancelled(RuntimeError):
    """The job did not end within the bounded wait after a stop request: cancelled."""


class RemoteJobFailed(RuntimeError):
    """The runner reported the job failed; the text is its state and the error's last line."""


def last_line(text: str) -> str:
    """The line of a runner's error text that says what went wrong: its last non-empty one
    (a Python traceback's exception), without Beam's '[while running ...]' suffix."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else '').split(' [while running', 1)[0]


class RemoteRun:
    """Progress, stop and the bounded wait of one run on workers that may be elsewhere."""

    def __init__(self, settings, options: PipelineOptions, console,
                 on_second: Callable[[int], None]):
        self.settings = settings
        self.console = console
        self.kind = classify(options)
        self.no_metrics = 'no live metrics from the runner yet'
        if (options.view_as(PortableOptions).job_endpoint or '') == 'embed':
            self.no_metrics += " (Beam's embedded job server has them only when the job ends)"
        self.folder = FileSystems.join(settings.rejects, f'{LIVE_FOLDER}{settings.run_id}')
        self.grace = settings.timeout + STOP_MARGIN
        self.stop = StopOnSignal(console, on_second, FileSystems.join(self.folder, 'stop'))
        self.stop.note = (f'; the job is cancelled through the runner if it has not ended '
                          f'within {self.grace:.0f} s')
        self.live = LiveChannel(None, self.stop.path)
        self._workers = 0
        self._workers_asked = 0.0
        self.cancelled = False
        self.closed = threading.Event()

    @classmethod
    def for_run(cls, settings, options: PipelineOptions, console,
                on_second: Callable[[int], None], detached: bool) -> Optional['RemoteRun']:
        """A RemoteRun, installed (signals), when this run's workers may be elsewhere; None for
        local runs and for Dataflow, which keeps its own path (pipeline/running.py)."""
        from pipeline.builder import is_dataflow
        if detached or is_dataflow(options) or classify(options).local:
            return None
        run = cls(settings, options, console, on_second)
        run.stop.install()
        threading.Thread(target=run._leave_at_the_deadline, name='stop-deadline',
                         daemon=True).start()
        return run

    def _leave_at_the_deadline(self) -> None:
        """Ends the command if it is still here --segment_timeout + 28 s after the first signal
        (the bounded wait and the cancel should have ended it by then)."""
        while not self.closed.wait(0.5):
            asked = self.stop.requested_at
            deadline = self.grace + CANCEL_SECONDS + LEAVE_MARGIN
            if asked is not None and time.monotonic() - asked >= deadline:
                self._say(f'error: the run did not end within {deadline:.0f} s of '
                          f'{self.stop.name}: leaving now; the files recorded as done so far '
                          f'stay done: rerun with --resume')
                os._exit(EXIT_SIGNAL_BASE + self.stop.signum)

    # -- what the workers said ---------------------------------------------------------------
    def workers_started(self, fresh_after: float = 10.0) -> int:
        """Worker processes that have left their object (listed at most every `fresh_after`
        seconds; once some have, the count only matters for the progress line)."""
        now = time.monotonic()
        if now - self._workers_asked >= fresh_after:
            self._workers_asked = now
            try:
                found = FileSystems.match([FileSystems.join(self.folder, WORKER_PREFIX + '*')])
                self._workers = max(self._workers, len(found[0].metadata_list))
            except Exception:   # noqa: BLE001 - a store hiccup: the count of the last look
                pass
        return self._workers

    def status(self, result) -> str:
        """'job RUNNING, 2 worker processes started' for the progress line."""
        state = getattr(result, 'state', '?')
        n = self.workers_started()
        return f'job {state}, {n} worker process{"es" if n != 1 else ""} started'

    # -- the wait ---------------------------------------------------------------------------
    def wait(self, result, files_total: int) -> None:
        """Waits for the job like `wait_until_finish`, printing progress, naming a job whose
        workers do not start, and cancelling it when a stop was not honoured in time."""
        ended = threading.Event()
        outcome = {}

        def wait_for_job():
            try:
                outcome['state'] = result.wait_until_finish()
            except BaseException as exc:   # noqa: BLE001 - handed to the launcher's thread
                outcome['error'] = exc
            finally:
                ended.set()

        threading.Thread(target=wait_for_job, name='wait-for-job', daemon=True).start()
        monitor = None
        if self.settings.progress_seconds > 0:
            monitor = ProgressMonitor(self.settings.progress_seconds, files_total, 0,
                                      self.settings.max_events_per_second, self.console,
                                      poll=dataflow_poll(result),
                                      status=lambda: self.status(result),
                                      no_metrics=self.no_metrics).start()
        started = time.monotonic()
        told = False
        try:
            while not ended.wait(0.5):
                now = time.monotonic()
                if not told and now - started >= NO_WORKER_SECONDS:
                    told = True
                    self._tell_if_no_worker(result, now - started)
                asked = self.stop.requested_at
                if asked is not None and now - asked >= self.grace:
                    self._cancel(result)
        finally:
            if monitor is not None:
                monitor.close()
        if 'error' in outcome:
            raise self._failure(result, outcome['error'])

    def _tell_if_no_worker(self, result, waited: float) -> None:
        if self.workers_started(fresh_after=0) == 0:
            self._say(f'no worker process has started after {waited:.0f} s (job '
                      f'{getattr(result, "state", "?")}): check that the runner can start the '
                      f'SDK workers (--environment_type, --environment_config) and that they '
                      f'can write {self.settings.rejects}; Ctrl-C stops the run')

    def _cancel(self, result) -> None:
        self._say(f'the job did not end within {self.grace:.0f} s of {self.stop.name}: '
                  f'cancelling it through the runner')
        done = threading.Event()

        def cancel():
            try:
                result.cancel()
            except Exception:   # noqa: BLE001 - leaving is what matters now
                pass
            finally:
                done.set()

        threading.Thread(target=cancel, name='cancel-job', daemon=True).start()
        done.wait(CANCEL_SECONDS)
        self.cancelled = True
        raise JobCancelled(f'job cancelled after {self.stop.name}')

    def _failure(self, result, exc: BaseException) -> BaseException:
        """The runner's error as one line with the job's state; our own stop reasons (no key,
        key refused) are left as they are, so they keep their exit status."""
        if stop_reason(exc) is not None or isinstance(exc, JobCancelled):
            return exc
        state = getattr(result, '_state', None) or 'FAILED'
        failure = RemoteJobFailed(f'the job ended in state {state} on {self.kind.name}: '
                                  f'{last_line(str(exc)) or type(exc).__name__}')
        failure.__cause__ = exc
        return failure

    def _say(self, text: str) -> None:
        try:
            print(f'{PROG}: {text}', file=self.console, flush=True)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        """Restores the signal handlers and removes the run's live folder from the store (the
        stop marker stays after a cancel, for workers a runner might not have stopped)."""
        self.closed.set()
        self.stop.close()
        try:
            found = [m.path for m in FileSystems.match(
                [FileSystems.join(self.folder, '*')])[0].metadata_list
                     if not (self.cancelled and m.path == self.stop.path)]
            if found:
                FileSystems.delete(found)
        except Exception:   # noqa: BLE001 - a leftover folder is harmless
            pass
