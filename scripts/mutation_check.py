#!/usr/bin/env python
"""Mutation check of the pure modules: would the fast unit tests notice a one-token mistake?

Run on demand (not in CI), from the repository root with the project's venv active:

    python scripts/mutation_check.py                 # every pure module
    python scripts/mutation_check.py sizing retry    # some of them (by file stem)
    python scripts/mutation_check.py --list          # print the mutants, run nothing

Each mutant changes one thing in one module: a comparison (< and <=, > and >=, == and !=,
in and not in, is and is not), an arithmetic operator (+ and -, * and /, // → /, % → //,
** → *), `and` and `or`, a dropped `not` or unary minus, a number constant + 1, True and False,
a string constant altered, `return x` → `return None`, or one statement inside a function
removed. Docstrings, annotations and the text of f-strings are left alone.

The mutant is written into a private copy of the repository and that module's own fast unit
tests (the files in TESTS below, `-m "not slow" -x`) run against it in a forked child, so the
heavy imports (pytest, Beam) are paid once. Killed: the tests fail, or run past a time limit
(an endless loop). The report gives killed/total per module and every survivor with its line;
the exit status is 1 when a module scores under --min (default 90%).

Why a script rather than mutmut: mutmut 3 mutates only code inside functions, so the limit
constants (32,000 / 500,000 / 2,500 / 100, the retryable statuses) would never be mutated,
and it picks tests by coverage over the whole suite instead of each module's own fast tests.
"""
import argparse
import ast
import copy
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Each pure module and its own fast unit tests (quickest first: -x stops at the first failure).
TESTS = {
    'transforms/mapping.py': ['tests/test_mapping_current_unit.py', 'tests/test_mapping_edges.py',
                              'tests/test_limits.py', 'tests/test_mapping.py'],
    'transforms/sizing.py': ['tests/test_limits.py', 'tests/test_batching.py'],
    'transforms/retry.py': ['tests/test_retry_decisions.py', 'tests/test_segment_client.py',
                            'tests/test_client_behaviour.py'],
    'transforms/segment_client.py': ['tests/test_client_safety_unit.py',
                                     'tests/test_segment_client.py',
                                     'tests/test_client_behaviour.py'],
    'pipeline/paths.py': ['tests/test_paths.py', 'tests/test_launcher_edges.py'],
    'transforms/layout.py': ['tests/test_paths.py', 'tests/test_launcher_edges.py',
                             'tests/test_listing.py'],
    'transforms/listing.py': ['tests/test_listing.py', 'tests/test_walk.py'],
    'transforms/completion.py': ['tests/test_completion.py'],
    'transforms/records.py': ['tests/test_incremental.py', 'tests/test_completion.py'],
    'pipeline/coverage.py': ['tests/test_coverage.py'],
    'pipeline/startup.py': ['tests/test_startup.py'],
    'pipeline/walk.py': ['tests/test_walk.py', 'tests/test_read_costs.py'],
    'transforms/packing.py': ['tests/test_read_costs.py'],
    'pipeline/endpoint.py': ['tests/test_endpoint_rules.py', 'tests/test_launcher_edges.py',
                             'tests/test_segment_client.py'],
}
PYTEST_ARGS = ['-q', '-x', '-m', 'not slow', '-p', 'no:cacheprovider', '--no-header',
               '-o', 'console_output_style=classic']

COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
           ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
           ast.In: ast.NotIn, ast.NotIn: ast.In}
ARITH = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
         ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult}
BOOL = {ast.And: ast.Or, ast.Or: ast.And}
REMOVABLE = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Raise)


# -- mutants ----------------------------------------------------------------------------------------
def _untouchable(tree):
    """Ids of nodes never mutated: docstrings, annotations, the literal text of f-strings."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                skip.add(id(body[0]))
                skip.add(id(body[0].value))
        annotations = []
        if isinstance(node, ast.arg) and node.annotation is not None:
            annotations.append(node.annotation)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            annotations.append(node.returns)
        if isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        if isinstance(node, ast.JoinedStr):
            annotations += [v for v in node.values if isinstance(v, ast.Constant)]
        if isinstance(node, ast.FormattedValue) and node.format_spec is not None:
            annotations.append(node.format_spec)
        for sub in annotations:
            skip.update(id(n) for n in ast.walk(sub))
    return skip


def _in_function(tree):
    """Ids of statements inside a function body (only those may be removed)."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(n) for n in ast.walk(node) if n is not node)
    return inside


def _changed_constant(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return f'XX{value}XX'
    return None


def mutation_points(tree):
    """(node index in ast.walk order, kind, detail) for every mutant of a module."""
    skip, inside = _untouchable(tree), _in_function(tree)
    points = []
    for index, node in enumerate(ast.walk(tree)):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            points += [(index, 'compare', j) for j, op in enumerate(node.ops)
                       if type(op) in COMPARE]
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in ARITH:
            points.append((index, 'arith', None))
        elif isinstance(node, ast.BoolOp):
            points.append((index, 'bool', None))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            points.append((index, 'unary', None))
        elif isinstance(node, ast.Constant) and _changed_constant(node.value) is not None:
            points.append((index, 'constant', None))
        if isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            points.append((index, 'return', None))
        if isinstance(node, REMOVABLE) and id(node) in inside:
            points.append((index, 'remove', None))
    return points


def _replace(tree, old, new):
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list) and any(v is old for v in value):
                value[[i for i, v in enumerate(value) if v is old][0]] = new
                return
    raise LookupError('node not found')


def _short(node):
    text = ast.unparse(node).splitlines()[0] if not isinstance(node, ast.Pass) else '(removed)'
    return text if len(text) <= 70 else text[:67] + '...'


def apply(tree, point):
    """The mutant's source and a one-line description; the original tree is not changed."""
    index, kind, detail = point
    mutant = copy.deepcopy(tree)
    node = list(ast.walk(mutant))[index]
    line = getattr(node, 'lineno', 0)
    before = _short(node)
    if kind == 'compare':
        node.ops[detail] = COMPARE[type(node.ops[detail])]()
    elif kind == 'arith':
        node.op = ARITH[type(node.op)]()
    elif kind == 'bool':
        node.op = BOOL[type(node.op)]()
    elif kind == 'constant':
        node.value = _changed_constant(node.value)
    elif kind == 'unary':
        _replace(mutant, node, node.operand)
        node = node.operand
    elif kind == 'return':
        node.value = ast.Constant(None)
    elif kind == 'remove':
        node = ast.Pass()
        _replace(mutant, list(ast.walk(mutant))[index], node)
    after = _short(node)
    return ast.unparse(ast.fix_missing_locations(mutant)), f'line {line}: {before}  →  {after}'


# -- running ----------------------------------------------------------------------------------------
def _clean_copy(target: Path):
    ignore = shutil.ignore_patterns('.git', '.venv', '__pycache__', '.hypothesis', '.pytest_cache',
                                    '*.egg-info', 'build', 'dist', 'out', 'sample-data', 'bench')
    shutil.copytree(ROOT, target, ignore=ignore)


def _child(copy_dir: Path, tests):
    """In the forked child: import the project from the copy, run pytest, exit with its code."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.chdir(copy_dir)
        sys.path[:] = [str(copy_dir)] + [p for p in sys.path if p and
                                         Path(p).resolve() != ROOT]
        import pytest
        code = pytest.main(PYTEST_ARGS + list(tests))
    except BaseException:  # noqa: BLE001 - any failure of the child counts as "tests failed"
        code = 3
    os._exit(int(code))


class Slot:
    """One private copy of the repository and the child (if any) testing a mutant in it."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.pid = None
        self.job = None
        self.started = 0.0


def run_all(jobs, slots, timeout_of, originals):
    """Runs (module, source, label) jobs in the slots; returns {label: exit code or 'timeout'}."""
    pending = list(jobs)
    results = {}
    while pending or any(s.pid for s in slots):
        for slot in slots:
            if slot.pid is None and pending:
                slot.job = module, source, _ = pending.pop(0)
                (slot.dir / module).write_text(source)
                slot.started = time.monotonic()
                pid = os.fork()
                if pid == 0:
                    _child(slot.dir, [t for t in TESTS[module] if (slot.dir / t).exists()])
                slot.pid = pid
        time.sleep(0.02)
        for slot in slots:
            if slot.pid is None:
                continue
            module, _, label = slot.job
            pid, status = os.waitpid(slot.pid, os.WNOHANG)
            if pid:
                results[(module, label)] = os.waitstatus_to_exitcode(status)
            elif time.monotonic() - slot.started > timeout_of[module]:
                os.kill(slot.pid, signal.SIGKILL)
                os.waitpid(slot.pid, 0)
                results[(module, label)] = 'timeout'
            else:
                continue
            if label != 'baseline':   # progress: . killed, S survived, T timed out
                code = results[(module, label)]
                sys.stderr.write('S' if code == 0 else 'T' if code == 'timeout' else '.')
                sys.stderr.flush()
            (slot.dir / module).write_text(originals[module])
            slot.pid = None
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('modules', nargs='*', help='file stems to check (default: all)')
    parser.add_argument('--jobs', type=int, default=1, help='mutants tested at once (default 1)')
    parser.add_argument('--min', type=float, default=90.0, help='required %% killed per module')
    parser.add_argument('--list', action='store_true', help='print the mutants and stop')
    args = parser.parse_args(argv)
    modules = [m for m in TESTS if not args.modules or Path(m).stem in args.modules]
    if not modules:
        parser.error(f'no such module; choose from {", ".join(Path(m).stem for m in TESTS)}')
    for missing in sorted({t for m in modules for t in TESTS[m] if not (ROOT / t).exists()}):
        print(f'warning: {missing} not found; its modules are checked without it')

    mutants = {}
    originals = {m: (ROOT / m).read_text() for m in modules}   # the copies are reset to these
    for module in modules:
        tree = ast.parse(originals[module])
        original = ast.unparse(tree)
        seen = set()
        for point in mutation_points(tree):
            source, label = apply(tree, point)
            if source == original or source in seen:
                continue
            try:
                compile(source, module, 'exec')
            except SyntaxError:
                continue
            seen.add(source)
            mutants.setdefault(module, []).append((module, source, label))
    if args.list:
        for module in modules:
            for _, _, label in mutants.get(module, []):
                print(f'{module} {label}')
        return 0

    os.environ.setdefault('CURRENTS_SHARED', str(ROOT.parent / 'shared'))
    os.environ['CI'] = '1'                 # the tests' fixed Hypothesis examples: a repeatable score
    os.environ['PYTHONDONTWRITEBYTECODE'] = '1'
    sys.dont_write_bytecode = True         # a stale .pyc must never stand in for a mutant
    # Third-party imports paid once, before forking (never the project's own modules).
    import apache_beam, fastavro, hypothesis, orjson, pytest, requests  # noqa: F401,E401

    with tempfile.TemporaryDirectory(prefix='mutation-') as tmp:
        slots = []
        for n in range(max(1, args.jobs)):
            _clean_copy(Path(tmp) / str(n))
            slots.append(Slot(Path(tmp) / str(n)))
        # The unmutated module (as the mutants are written: unparsed) must pass its tests.
        timeout_of = {m: 600.0 for m in modules}
        baseline = [(m, ast.unparse(ast.parse(originals[m])), 'baseline')
                    for m in modules]
        started = {}
        for job in baseline:
            started[job[0]] = time.monotonic()
            code = run_all([job], slots[:1], timeout_of, originals)[(job[0], 'baseline')]
            took = time.monotonic() - started[job[0]]
            if code != 0:
                print(f'{job[0]}: its tests fail without any mutant (exit {code}); fix that first')
                return 2
            timeout_of[job[0]] = max(10.0, 3 * took + 5)
        results = run_all([j for m in modules for j in mutants.get(m, [])], slots, timeout_of,
                          originals)

    sys.stderr.write('\n')
    worst = 100.0
    for module in modules:
        labels = [label for _, _, label in mutants.get(module, [])]
        survivors = [lb for lb in labels if results[(module, lb)] == 0]
        killed = len(labels) - len(survivors)
        score = 100.0 * killed / len(labels) if labels else 100.0
        worst = min(worst, score)
        timeouts = sum(results[(module, lb)] == 'timeout' for lb in labels)
        print(f'{module}: {killed}/{len(labels)} killed ({score:.0f}%)'
              + (f', {timeouts} of them by timing out' if timeouts else ''))
        for label in sorted(survivors, key=lambda lb: int(lb.split()[1].rstrip(':'))):
            print(f'    survived  {label}')
    return 0 if worst >= args.min else 1


if __name__ == '__main__':
    sys.exit(main())
