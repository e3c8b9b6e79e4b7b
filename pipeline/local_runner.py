"""How a local run executes: Beam's FnApiRunner, in-process or on warm worker processes."""
import logging
import os
import threading
from typing import List, Optional

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.transforms.environments import SubprocessSDKEnvironment

from pipeline.local_workers import WarmWorkers, cold_command

# Warm (forked) worker processes are ready in milliseconds, cold ones in ~2.7 s; two of them
# roughly halve the per-event time on 2 cores. One process and two warm workers break even at
# ~30,000 events (16 MB) here (docs/how-it-works.md, "The local runner").
PARALLEL_MIN_BYTES = 24 * 1024 * 1024
_DIRECT_FLAGS = ('--direct_num_workers', '--direct_running_mode')


def local_runner_options(options: PipelineOptions) -> None:
    """Pin the DirectRunner to its in-process FnApiRunner engine.

    Unpinned, Beam's DirectRunner first tries to download the Prism runner binary: runs would
    behave differently with and without internet. FnApiRunner is what it falls back to offline.
    """
    standard = options.view_as(StandardOptions)
    if standard.runner in (None, 'DirectRunner', 'direct'):
        standard.runner = 'FnApiRunner'


def is_local(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner == 'FnApiRunner'


def local_parallelism(options: PipelineOptions, argv: List[str], input_bytes: int) -> None:
    """Large local runs use every core (worker processes) unless the user chose."""
    if not is_local(options) or any(a.split('=', 1)[0] in _DIRECT_FLAGS for a in argv):
        return
    cores = os.cpu_count() or 1
    if cores > 1 and input_bytes >= PARALLEL_MIN_BYTES:
        direct = options.view_as(DirectOptions)
        direct.direct_num_workers = cores
        direct.direct_running_mode = 'multi_processing'


def worker_processes(options: PipelineOptions) -> int:
    """How many local worker processes the run starts (0: it runs in this process)."""
    direct = options.view_as(DirectOptions)
    if not is_local(options) or direct.direct_running_mode != 'multi_processing':
        return 0
    return direct.direct_num_workers or os.cpu_count() or 1   # 0: every core, as Beam reads it


def uses_worker_processes(options: PipelineOptions) -> bool:
    return worker_processes(options) > 1


def start_warm_workers(options: PipelineOptions, fresh: bool) -> Optional[WarmWorkers]:
    """A zygote for warm worker processes, if this run uses worker processes and may fork.

    Forking is safe only while this process has one thread (a fork copies no other thread, and
    no lock another thread holds is ever released in the copy); otherwise Beam's cold start.
    """
    if fresh or not uses_worker_processes(options) or not WarmWorkers.supported():
        return None
    if threading.active_count() > 1:
        return None
    try:
        return WarmWorkers().start()
    except OSError:   # e.g. no Unix socket possible in the temp folder: Beam's cold start
        return None


class _KeepEnvironmentFilter(logging.Filter):
    """FnApiRunner warns that in_memory mode ignores direct_num_workers: not so with our
    environment (FnApiRunner starts direct_num_workers workers for any environment)."""

    def filter(self, record):
        return 'direct_num_workers is not equal to 1' not in record.getMessage()


_FN_RUNNER_LOGGER = logging.getLogger('apache_beam.runners.portability.fn_api_runner.fn_runner')


class WorkerCommandRunner(FnApiRunner):
    """FnApiRunner whose worker processes are started by this command (Beam's per worker).

    FnApiRunner replaces the default environment with its own cold-start command when the
    running mode is multi_processing, so that mode is switched off for the runner only; the
    number of workers (direct_num_workers) and everything else stay Beam's.
    """

    def __init__(self, command: str):
        super().__init__(default_environment=SubprocessSDKEnvironment.from_command_string(
            command))

    def run_pipeline(self, pipeline, options):
        direct = options.view_as(DirectOptions)
        mode, direct.direct_running_mode = direct.direct_running_mode, 'in_memory'
        quiet = _KeepEnvironmentFilter()
        _FN_RUNNER_LOGGER.addFilter(quiet)
        try:
            return super().run_pipeline(pipeline, options)
        finally:
            _FN_RUNNER_LOGGER.removeFilter(quiet)
            direct.direct_running_mode = mode


class WarmWorkersRunner(WorkerCommandRunner):
    """Worker processes forked by a WarmWorkers zygote."""

    def __init__(self, workers: WarmWorkers):
        super().__init__(workers.command())


def worker_runner(options: PipelineOptions,
                  workers: Optional[WarmWorkers]) -> Optional[FnApiRunner]:
    """The runner of a local run with worker processes: forked warm by `workers`, else cold
    ones as Beam starts them, but deaf to Ctrl-C (local_workers.cold); None in one process."""
    if workers:
        return WarmWorkersRunner(workers)
    if uses_worker_processes(options):
        return WorkerCommandRunner(cold_command())
    return None
