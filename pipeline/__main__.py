"""`python -m pipeline` and the `currents-to-segment` command."""
import sys


def main() -> None:
    from pipeline.startup import import_command
    import_command(sys.argv[1:])()


if __name__ == '__main__':
    main()
