"""`--follow`: the `--since_last_run` pass again and again in one local process.

Every `--poll_seconds` the input is listed, files not yet recorded are run in waves (each
recording its files as its last step), and one line per wave says what it did and how far
behind the bucket it is. SIGINT or SIGTERM lets the current wave finish, so nothing is left
half-recorded, then prints the cumulative summary and exits 0.
"""
import signal
import time

from pipeline.cli import EXIT_OK, check_sending_setup, finish, run_failed
from pipeline.incremental import (advance_window, lag_text, new_files, release, take_lock,
                                  wave_summary, window_for)
from pipeline.listing import DELIVERED, input_pattern
from pipeline.paths import UsageError
from pipeline.runners import classify
from pipeline.summary import Summary
from pipeline.waves import make_waves, wave_size

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
MAX_FAILED_POLLS = 5   # listings in a row that fail before --follow gives up
# A local file is taken once it has not changed for this long (it may still be copied in).
SETTLE_SECONDS = 5.0


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between waves (a plain flag: nothing that
    takes a lock runs inside the signal handler)."""

    def __init__(self):
        self.signal_name = None
        self._previous = {}

    def install(self):
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, _frame):
        self.signal_name = signal.Signals(signum).name

    @property
    def is_set(self) -> bool:
        return self.signal_name is not None

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.is_set and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def wave_line(number: int, files, summary: Summary, seconds: float, stamps=None) -> str:
    """What one wave did; `files waited` = now minus the oldest modification stamp sent."""
    d = summary.as_dict()
    now = time.time()
    written = [stamps[f[0]][1] for f in files if stamps and f[0] in stamps]
    waited = f', files waited up to {max(0.0, now - min(written)):.1f} s' if written else ''
    unreadable = (f' (+{d["files_rejected"]} unreadable files)' if d['files_rejected']
                  else '')
    return (f'wave {number}: {len(files)} files, {d["read"]} events read, {d["sent"]} sent, '
            f'{d["dropped_no_external_user_id"]} dropped, {d["rejected"]} rejected{unreadable} '
            f'in {seconds:.1f} s; {lag_text(files, now)}{waited}; balance '
            f'{"OK" if summary.balanced else "MISMATCH"}')


def settled(files, stamps, now: float, seconds: float = SETTLE_SECONDS):
    """The files of a local folder no longer being written: unchanged for `seconds` (a file
    copied in is modified until the copy ends). Object stores publish whole objects: all."""
    ready, waiting = [], 0
    for entry in files:
        stamp = (stamps or {}).get(entry[0], (0, 0.0))[1]
        if '://' in entry[0] or now - stamp >= seconds:
            ready.append(entry)
        else:
            waiting += 1
    return ready, waiting


def follow(settings, options, argv, out) -> int:
    from pipeline.local_runner import start_warm_workers, worker_runner
    kind = classify(options)
    if not kind.local:   # its stop and progress need workers that share this machine
        raise UsageError(f'--follow runs locally; on {kind.name} launch --since_last_run on a '
                         f'schedule (docs/incremental.md)')
    check_sending_setup(settings, options)
    pattern = input_pattern(settings.input)
    wave_hours = wave_size(settings.wave_hours, settings.wave_mb, False, False)
    stop = StopFlag()
    stop.install()
    lock = workers = None
    try:
        lock, go = take_lock(settings, options, out, 'follow')
        if not go:
            return EXIT_OK
        workers = start_warm_workers(options, settings.fresh_worker_processes)
        runner = worker_runner(options, workers)
        if lock is not None:
            lock.start_renewing()
        print(f'follow: sending new files of {pattern} every {settings.poll_seconds:g} s '
              f'until SIGINT/SIGTERM', file=out, flush=True)
        total, polls, waves, files_sent, skipped = Summary({}, settings.mapping), 0, 0, 0, {}
        failed_polls = 0
        while not stop.is_set:
            polls += 1
            try:
                window = window_for(settings)
                listing, _ = new_files(settings, options, window)
                failed_polls = 0
            except UsageError as exc:   # the store did not answer: try again, not forever
                failed_polls += 1
                if failed_polls >= MAX_FAILED_POLLS:
                    raise
                print(f'follow: {exc}; trying again in {settings.poll_seconds:g} s', file=out,
                      flush=True)
                stop.sleep(settings.poll_seconds)
                continue
            skipped = {k: v for k, v in listing.skipped.items() if k != DELIVERED}
            ready, waiting = settled(listing.files, settings.file_stamps, time.time())
            if waiting:
                print(f'follow: {waiting} files still being written: taken at the next poll',
                      file=out, flush=True)
            poll_waves = make_waves(ready, wave_hours)
            if not poll_waves and not waiting:
                advance_window(settings, window, listing)
            for number, wave in enumerate(poll_waves):
                waves += 1
                started = time.monotonic()
                last = number == len(poll_waves) - 1 and not waiting
                try:
                    summary = wave_summary(settings, options, wave, f'f{waves}', runner,
                                           window.update(listing) if last else None)
                except Exception as exc:   # its files not recorded as done: the next run
                    print(f'follow: wave {waves} failed; the files it did not record as done '
                          f'are sent by the next run', file=out, flush=True)
                    return run_failed(exc)
                total = total.add(summary)
                files_sent += len(wave)
                print(wave_line(waves, wave, summary, time.monotonic() - started,
                                settings.file_stamps), file=out, flush=True)
                if stop.is_set:
                    break
            stop.sleep(settings.poll_seconds)
        total = total.add(Summary.from_listing(skipped, settings.mapping))
        print(f'follow: stopped by {stop.signal_name}: {polls} polls, {waves} waves, '
              f'{files_sent} files', file=out)
        print(total.table(), file=out, flush=True)
        return finish(total, settings.summary_output, settings.rejects, report=settings.report)
    finally:
        if workers:
            workers.close()
        release(lock)
        stop.restore()
