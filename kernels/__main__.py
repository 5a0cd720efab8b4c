"""The command line: ``python -m kernels info`` and ``python -m kernels bench``
(also installed as the ``embedded-kernels`` command)."""

import argparse
import os
import sys


def _parser():
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    prog = "python -m kernels" if script in ("", "__main__.py", "-c") else script
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Fast CPU kernels for embedded machine learning.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser(
        "info",
        help="version, backends (and why one is missing), machine",
        description="Print the version, the backends available here (and why "
        "any is missing), the default backend, Numba's cache, OpenMP, the CPU "
        "and the Python and NumPy versions.",
    )
    bench = commands.add_parser(
        "bench",
        help="time every kernel against NumPy and each backend",
        description="Time each kernel family on fixed inputs: the NumPy "
        "expression a user would write, then every available backend, with "
        "the speedup, the achieved GB/s and its share of np.copyto's bandwidth "
        "on the same array.  Prints a Markdown table on stdout; a progress "
        "bar goes to stderr when it is a terminal.",
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help="smaller inputs and fewer samples: a run of seconds",
    )
    bench.add_argument(
        "--json",
        action="store_true",
        help="print the results as JSON instead of the table",
    )
    return parser


def main(argv=None):
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and
    return the exit status: 0 on success, 1 when a benchmark failed, 2 for
    a usage error."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # usage errors and --help
        return exc.code
    try:
        if args.command == "info":
            from kernels import _info

            print(_info.format_report(_info.report()))
            return 0
        from kernels import _bench

        return _bench.main(quick=args.quick, as_json=args.json)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): silence the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
