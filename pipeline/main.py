"""Entry point: parse, check, build, run, print the summary, exit with a one-line reason."""
import logging
import re
import sys
from typing import List, Optional

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.builder import build_pipeline
from pipeline.options import check_argv, settings_from
from pipeline.summary import Summary
from transforms.paths import UsageError
from transforms.read import check_input_exists, input_pattern
from transforms.segment_client import SegmentConfigurationError
from transforms.write_key import WriteKeyMissing

PROG = 'currents-to-segment'
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SEGMENT_CONFIG = 0, 1, 2, 3
_KNOWN_FAILURES = (SegmentConfigurationError, WriteKeyMissing)


def local_runner_options(options: PipelineOptions) -> None:
    """Pin the DirectRunner to its in-process FnApiRunner engine.

    Unpinned, Beam's DirectRunner first tries to download the Prism runner binary: runs would
    behave differently with and without internet. FnApiRunner is what it falls back to offline.
    """
    standard = options.view_as(StandardOptions)
    if standard.runner in (None, 'DirectRunner', 'direct'):
        standard.runner = 'FnApiRunner'


def _one_line(exc: BaseException) -> str:
    text = str(exc).split(' [while running', 1)[0]
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _known_failure(exc: BaseException) -> Optional[BaseException]:
    """Our own stop reasons, found even when a runner re-raised or wrapped them."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, _KNOWN_FAILURES):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _from_text(exc: BaseException) -> Optional[str]:
    match = re.search(r'(?:SegmentConfigurationError|WriteKeyMissing): ([^\n\[]+)', str(exc))
    return match.group(1).strip() if match else None


def run(argv: Optional[List[str]] = None, out=None) -> int:
    out = out or sys.stdout
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        check_argv(argv)
        options = PipelineOptions(argv)
        settings = settings_from(options)
        local_runner_options(options)
        pattern = input_pattern(settings.input)
        check_input_exists(pattern)
        if not settings.dry_run_output and not settings.key_source.secret_name:
            settings.key_source.resolve()  # fail before reading anything if no key is set
        p = build_pipeline(settings, pattern, options)
    except (UsageError, WriteKeyMissing) as exc:
        print(f'{PROG}: error: {_one_line(exc)}', file=sys.stderr)
        return EXIT_USAGE
    try:
        result = p.run()
        result.wait_until_finish()
    except Exception as exc:  # the runner re-raises worker errors; keep the answer to one line
        known = _known_failure(exc)
        message = _one_line(known) if known else _from_text(exc)
        if message:
            print(f'{PROG}: error: {message}', file=sys.stderr)
            return EXIT_SEGMENT_CONFIG
        logging.getLogger(__name__).debug('run failed', exc_info=True)
        print(f'{PROG}: error: the run failed: {type(exc).__name__}: {_one_line(exc)}',
              file=sys.stderr)
        return EXIT_FAILED
    summary = Summary.from_result(result)
    print(summary.table(), file=out)
    if settings.summary_output:
        from apache_beam.io.filesystems import FileSystems
        with FileSystems.create(settings.summary_output) as f:
            f.write(summary.to_json().encode('utf-8'))
    if not summary.balanced:
        print(f'{PROG}: error: the summary does not balance (read != dropped + sent + rejected)',
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    sys.exit(run())
