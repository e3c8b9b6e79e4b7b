"""Where a run's workers live, decided from its options: the launcher's own process or machine
(local), or possibly other machines that share nothing with it (remote).

Local workers share the launcher's working directory, environment, temp folder and loopback
address, so relative paths, SEGMENT_WRITE_KEY, the UDP progress reports and the stop file all
work. Remote workers share none of that: what they write must go to a store every machine
reaches, the write key must come from a secret, and progress and stopping go through the runner
and the rejects store (pipeline/remote.py). Anything not known to be local counts as remote.
"""
import os
from typing import NamedTuple, Optional

from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions

from pipeline.paths import UsageError

# The DirectRunner as this project pins it (pipeline/local_runner.py: Beam's FnApiRunner, in
# this process or in local worker processes it starts), and Beam's other in-process runners.
_IN_PROCESS = frozenset({'', 'direct', 'fnapi', 'bundlebaseddirect', 'switchingdirect'})
# Portable runners: their workers are wherever the environment puts them.
_PORTABLE = frozenset({'portable', 'prism', 'flink', 'spark'})
# LOOPBACK runs the SDK workers inside the launching process, whatever the job server.
_LOCAL_ENVIRONMENTS = frozenset({'loopback'})
STORE_SCHEMES = 'gs://, s3:// or azfs://'
_DASK = ('--runner DaskRunner is not supported: Beam 2.77\'s Dask runner reports no metrics, '
         'and the summary and its balance check are built from them (use the DirectRunner, '
         'Dataflow, or a portable runner: Flink, Spark)')


class RunnerKind(NamedTuple):
    """A run's runner, as far as its workers go."""
    name: str        # as the user would say it: 'DirectRunner', 'PortableRunner', ...
    local: bool      # workers share the launcher's disk, environment and loopback address
    where: str       # why, for messages: 'EXTERNAL environment', 'in this process', ...


def runner_key(runner: Optional[str]) -> str:
    """'PortableRunner', 'portable' and 'apache_beam....PortableRunner' all give 'portable'."""
    name = (runner or '').rsplit('.', 1)[-1].lower()
    return name[:-len('runner')] if name.endswith('runner') else name


def classify(options: PipelineOptions) -> RunnerKind:
    """Local or remote workers for these options; unknown runners count as remote."""
    runner = options.view_as(StandardOptions).runner or 'DirectRunner'
    key = runner_key(runner)
    name = runner.rsplit('.', 1)[-1]
    if key in _IN_PROCESS:
        return RunnerKind('DirectRunner' if key == 'fnapi' else name, True,
                          'workers in this process or its own worker processes')
    if key == 'dask':
        raise UsageError(_DASK)
    if key in _PORTABLE:
        environment = (options.view_as(PortableOptions).environment_type or '').lower()
        if not environment and key == 'prism':
            environment = 'loopback'   # Prism's own default
        if environment in _LOCAL_ENVIRONMENTS:
            return RunnerKind(name, True, 'LOOPBACK environment: workers in this process')
        shown = environment.upper() or 'default (DOCKER)'
        return RunnerKind(name, False, f'{shown} environment')
    if 'dataflow' in key:
        return RunnerKind(name, False, 'Dataflow workers')
    return RunnerKind(name, False, 'workers of an unknown runner')


def is_remote(options: PipelineOptions) -> bool:
    return not classify(options).local


def absolute(path: Optional[str]) -> Optional[str]:
    """A local path as the launcher means it (absolute); store URLs and None unchanged."""
    if not path or '://' in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


def settle_paths(settings, options: PipelineOptions, written_by_workers=('--rejects',
                                                                           '--dry_run_output')
                 ) -> RunnerKind:
    """Makes the settings' local paths absolute, and refuses (one line) a local path that
    remote workers would write: it would land on their disk, not the launcher's.

    --summary_output is written by the launcher, so it may stay local on any runner.
    """
    kind = classify(options)
    settings.input = absolute(settings.input) if settings.input != '-' else settings.input
    settings.rejects = absolute(settings.rejects) or settings.rejects
    settings.dry_run_output = absolute(settings.dry_run_output)
    settings.summary_output = absolute(settings.summary_output)
    settings.skip_files = frozenset(absolute(p) for p in settings.skip_files)
    if kind.local:
        return kind
    for flag in written_by_workers:
        value = getattr(settings, flag[2:])
        if value and '://' not in value:
            raise UsageError(f'{flag} {value} is a local path, but on {kind.name} '
                             f'({kind.where}) the workers may run on other machines and would '
                             f'write it there: give a store URL ({STORE_SCHEMES})')
    return kind


def check_remote_key(settings, options: PipelineOptions) -> None:
    """Remote workers do not see the launcher's SEGMENT_WRITE_KEY: a run that sends needs
    --segment_write_key_secret, refused here before anything starts."""
    if settings.dry_run_output or settings.key_source.secret_name:
        return
    kind = classify(options)
    if kind.local:
        return
    raise UsageError(f'on {kind.name} ({kind.where}) the workers do not see this '
                     f'environment\'s SEGMENT_WRITE_KEY: pass --segment_write_key_secret with '
                     f'the secret that holds the write key (docs/stores.md)')
