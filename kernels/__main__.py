"""The command line (also installed as the ``embedded-kernels`` command):
``demo``, ``compress`` and ``predict`` (the compression pipeline,
``kernels.compress``), ``info`` and ``bench``."""

import argparse
import os
import sys


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit status 2), not the usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser():
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    prog = "python -m kernels" if script in ("", "__main__.py", "-c") else script
    parser = _Parser(
        prog=prog,
        description="Fast CPU kernels for embedded machine learning.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from kernels import _compress_cli as cli

    demo = commands.add_parser(
        "demo",
        help="the main job: train, compress and measure a sparse MLP on digits",
        description="Train the dense 64-300-100-10 baseline on the embedded "
        "digits (75/25 stratified split, fixed seed), train it sparse with an "
        "l1 penalty, prune dead neurons, quantise, and print "
        "accuracy, size, compression ratio and inference time.",
    )
    cli.add_training_options(demo, data=False)
    compress = commands.add_parser(
        "compress",
        help="the demo's pipeline on your data, writing the model file",
        description="Train, compress and measure a sparse MLP on digits or on "
        "an .npz file with X_train, y_train, X_test, y_test; --out writes the "
        "deployable model file.",
    )
    cli.add_training_options(compress)
    predict = commands.add_parser(
        "predict",
        help="accuracy and latency of a model file on a data file",
        description="Load a model file (NumPy and the compiled kernels only) "
        "and print its accuracy and latency on the X_test, y_test (or X, y) "
        "of an .npz file, or on the digits test split.",
    )
    predict.add_argument("model", metavar="MODEL.bin")
    predict.add_argument("--data", default="digits", metavar="digits|FILE.npz")
    predict.add_argument(
        "--seed",
        type=int,
        default=0,
        help="with --data digits: the split's seed, the --seed the model was "
        "compressed with (default: 0)",
    )
    predict.add_argument(
        "--backend", default=None, help="cython, numba or numpy (default: best)"
    )
    cli.add_output_options(predict)
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
        if args.command in ("demo", "compress", "predict"):
            return _compression_command(args)
        if args.command == "info":
            from kernels import _info

            print(_info.format_report(_info.report()))
            return 0
        from kernels.benchmarks import _table

        return _table.main(quick=args.quick, as_json=args.json)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): silence the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _compression_command(args):
    """Run demo, compress or predict; bad input, and an OSError on a path
    (missing, a directory, a symbolic link loop, unreadable, a full disk),
    is one line on stderr and exit status 1."""
    from kernels import _compress_cli as cli

    try:
        if args.command == "predict":
            return cli.run_predict(args)
        return cli.run_compress(args)
    except OSError as exc:
        print(f"error: {cli.os_error_message(exc)}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, FloatingPointError) as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message
        print(f"error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
