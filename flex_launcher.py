"""Dataflow Flex Template entry point (FLEX_TEMPLATE_PYTHON_PY_FILE in the Dockerfile).

The same program as the `currents-to-segment` command (pipeline.main), with two adaptations to
how the template launcher calls it (`python flex_launcher.py --<parameter>=<value> ...`):

- On/off options (--segment_gzip, --resume, --plan, --wait, --since_last_run) are argparse
  flags that refuse a value (`--segment_gzip=true` is "ignored explicit argument"), but a
  template parameter always has one. So `--flag=true` becomes `--flag` and `--flag=false` is
  dropped; any other value is left for the parser to refuse with its one-line error.
- A template always runs on Dataflow: without --runner, DataflowRunner is used (the command
  line's default would be the local runner).
"""
import argparse
import sys
from typing import List

TRUE = frozenset({'true', 'yes', 'on', '1'})
FALSE = frozenset({'false', 'no', 'off', '0'})


def flag_options() -> frozenset:
    """The --options of CurrentsToSegmentOptions that take no value."""
    from pipeline.options import CurrentsToSegmentOptions
    parser = argparse.ArgumentParser(add_help=False)
    CurrentsToSegmentOptions._add_argparse_args(parser)
    return frozenset(opt for action in parser._actions if action.nargs == 0
                     for opt in action.option_strings)


def template_argv(argv: List[str]) -> List[str]:
    flags = flag_options()
    out = []
    for arg in argv:
        name, sep, value = arg.partition('=')
        if sep and name in flags:
            if value.strip().lower() in TRUE:
                out.append(name)
                continue
            if value.strip().lower() in FALSE:
                continue
        out.append(arg)
    if not any(a == '--runner' or a.startswith('--runner=') for a in out):
        out.append('--runner=DataflowRunner')
    return out


if __name__ == '__main__':
    sys.argv[1:] = template_argv(sys.argv[1:])
    from pipeline.main import main
    main()
