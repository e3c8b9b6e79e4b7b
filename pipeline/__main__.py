"""`python -m pipeline` and the `currents-to-segment` command."""
import sys


def main() -> None:
    from pipeline.startup import skip_unneeded_imports
    skip_unneeded_imports(sys.argv[1:])
    from pipeline.main import main as run_command
    run_command()


if __name__ == '__main__':
    main()
