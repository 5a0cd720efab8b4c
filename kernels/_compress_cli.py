"""The compression commands of the command line: ``demo``, ``compress`` and
``predict`` (``kernels.__main__`` parses, this module runs them)."""

import functools
import json
import os
import stat
import sys
import time

import numpy as np

from kernels import compress as pipeline
from kernels._progress import ProgressBar
from kernels.benchmarks.timing import median_seconds, single_thread_blas
from kernels.train import OPTIMIZERS, PENALTIES

# The optimizers of the --plot loss curves: (label, optimizer, lam).
CURVES = (
    ("sgd", "sgd", None),
    ("momentum", "momentum", None),
    ("adam", "adam", None),
    ("svrg", "svrg", None),
    ("lambda 0.7", "svrg", 0.7),
    ("saga", "saga", None),
    ("vcsg", "vcsg", None),
)


def add_training_options(parser, data=True):
    """The options of ``compress`` (``demo`` takes the same but --data)."""
    if data:
        parser.add_argument(
            "--data",
            default="digits",
            metavar="digits|FILE.npz",
            help="the embedded digits, or an .npz with X_train, y_train, X_test, "
            "y_test (default: digits)",
        )
    parser.add_argument(
        "--hidden",
        default="300,100",
        metavar="W1,W2,...",
        help="hidden layer widths (default: 300,100, LeNet-300-100)",
    )
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    parser.add_argument(
        "--lam",
        type=float,
        default=None,
        help="the lambda-estimator's lam in [0, 1] for svrg and saga "
        "(default: textbook method)",
    )
    parser.add_argument(
        "--penalty",
        choices=[p for p in PENALTIES if p],
        default="l1",
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        default=1.0,
        metavar="POINTS",
        help="the accuracy budget: the most compressed model at most POINTS "
        "percentage points below the dense model on a validation split "
        "(default: 1.0)",
    )
    parser.add_argument(
        "--target-bytes",
        type=int,
        default=None,
        metavar="N",
        help="the size budget instead: the most accurate model whose file fits "
        "in N bytes",
    )
    parser.add_argument(
        "--validation",
        type=float,
        default=0.33,
        metavar="FRACTION",
        help="the part of the training set held out to judge models by (default: 0.33)",
    )
    parser.add_argument(
        "--confidence",
        type=float,
        default=0.0,
        metavar="Z",
        help="with --max-drop, clear the budget by Z standard errors of the "
        "validation estimate (default: 0, the estimate itself)",
    )
    parser.add_argument(
        "--sparsifier",
        choices=pipeline.SPARSIFIERS,
        default="l1",
        help="l1: the penalty's strength is searched (default); gmp: gradual "
        "magnitude pruning, the kept density is searched (with --beta, the "
        "penalty beside it)",
    )
    parser.add_argument(
        "--density",
        type=float,
        default=None,
        help="with --sparsifier gmp: the kept fraction of each weight matrix "
        "(default: searched)",
    )
    parser.add_argument(
        "--beta",
        type=float,
        default=None,
        help="l1 strength (default: searched for the budget)",
    )
    parser.add_argument(
        "--group-beta",
        type=float,
        default=0.0,
        help="neuron group l1 strength (default: 0)",
    )
    parser.add_argument(
        "--step",
        type=float,
        default=None,
        help="initial step (default: 0.05; 0.001 for adam)",
    )
    parser.add_argument(
        "--step-decay",
        type=float,
        default=0.1,
        help="final step / initial step (default: 0.1)",
    )
    parser.add_argument(
        "--epochs",
        type=float,
        default=100,
        help="sparse training budget in passes over the data (default: 100)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--fine-tune-epochs",
        type=float,
        default=100,
        help="Adam on the surviving weights (default: 100; 0: none)",
    )
    parser.add_argument(
        "--fine-tune-step",
        type=float,
        default=3e-3,
        help="Adam's step in the fine-tuning (default: 3e-3)",
    )
    parser.add_argument(
        "--dense-epochs",
        type=float,
        default=30,
        help="the dense baseline's training (default: 30)",
    )
    parser.add_argument(
        "--bits",
        type=int,
        choices=pipeline.BITS,
        default=None,
        help="every layer's integer bits (default: chosen per layer, 8 to 2 "
        "bits or float16, for the budget)",
    )
    parser.add_argument("--seed", type=int, default=0)
    add_output_options(parser)
    parser.add_argument(
        "--out", metavar="MODEL.bin", help="write the deployable model file"
    )
    parser.add_argument(
        "--plot",
        metavar="DIR",
        help="write PNGs: the search's points (validation accuracy against "
        "compression) and "
        "training loss against IFOs per optimizer (needs matplotlib)",
    )


def add_output_options(parser):
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object, not a table"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars on stderr"
    )


class Progress:
    """The training phases' progress callback, ``progress(phase, done,
    total, loss)``: one progress bar on stderr (when it is a terminal),
    redrawn for each phase with the loss and the phase's seconds;
    ``note(line)`` writes a line that stays (one per strength the search
    trained), on a terminal or not, unless disabled (``--quiet``)."""

    def __init__(self, enabled):
        self.enabled = enabled
        self.bar = ProgressBar(enabled)
        self.phase = None
        self.started = time.perf_counter()

    def __call__(self, phase, done, total, loss):
        if phase != self.phase:
            self.phase = phase
            self.started = time.perf_counter()
        fraction = min(1.0, done / total) if total else 1.0
        self.bar.update(
            fraction,
            1.0,
            f"{phase:<10}",
            f"{100 * fraction:3.0f}%  loss {loss:.4f}  "
            f"{time.perf_counter() - self.started:5.1f} s",
        )

    def note(self, line):
        if self.enabled:
            self.bar.close()
            print(line, file=sys.stderr, flush=True)

    def close(self):
        self.bar.close()
        self.phase = None


def _hidden(text):
    try:
        widths = [int(w) for w in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--hidden must be comma-separated widths such as 300,100, got {text!r}"
        ) from None
    if not widths or min(widths) < 1:
        raise ValueError(f"--hidden widths must be positive, got {text!r}")
    return widths


def os_error_message(exc):
    """One line for an OSError on a path: "PATH: reason" (the reason in
    words, without the errno)."""
    reason = exc.strerror or str(exc)
    path = exc.filename
    return reason if path is None else f"{os.fsdecode(path)}: {reason}"


def input_file(path, option, missing="no such file"):
    """``path`` if it names a regular file that exists (after symbolic
    links), else a ValueError of one line naming ``option`` and the path: a
    missing path, a directory, a symbolic link loop, a FIFO or a device
    (which would block or never end) are refused before anything is read
    or trained."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise ValueError(f"{option}: {missing}: {path}") from None
        raise ValueError(f"{option}: {os_error_message(exc)}") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{option}: {path}: is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise ValueError(
            f"{option}: {path}: not a regular file (a FIFO, device or socket)"
        )
    return path


def _output_file(path, option):
    """Refuse, before training, an output path that exists but is not a
    regular file, or whose directory does not exist."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"{option}: no such directory: {directory}")
    if os.path.lexists(path):
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise ValueError(f"{option}: {os_error_message(exc)}") from None
        if stat.S_ISDIR(mode):
            raise ValueError(f"{option}: {path}: is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise ValueError(
                f"{option}: {path}: not a regular file (a FIFO, device or socket)"
            )


def _output_directory(path, option):
    """Refuse, before training, a path for figures that exists but is not a
    directory (or is a symbolic link loop)."""
    if os.path.lexists(path):
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise ValueError(f"{option}: {os_error_message(exc)}") from None
        if not stat.S_ISDIR(mode):
            raise ValueError(f"{option}: {path}: exists and is not a directory")


def _dataset(spec, seed=0):
    if spec == "digits":
        return pipeline.load_digits(seed)
    return pipeline.load_dataset(input_file(spec, "--data"))


def _options(args):
    if args.lam is not None and args.optimizer not in ("svrg", "saga"):
        raise ValueError(f"--lam applies to svrg and saga, not {args.optimizer}")
    if args.lam is not None and not 0.0 <= args.lam <= 1.0:
        raise ValueError(f"--lam must be in [0, 1], got {args.lam}")
    for name in ("beta", "group_beta", "epochs", "fine_tune_epochs", "step_decay"):
        value = getattr(args, name)
        if value is None:
            continue
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if args.dense_epochs <= 0:
        raise ValueError(f"--dense-epochs must be > 0, got {args.dense_epochs}")
    for name in ("step", "fine_tune_step"):
        value = getattr(args, name)
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {value}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not (np.isfinite(args.max_drop) and 0 <= args.max_drop <= 100):
        raise ValueError(f"--max-drop must be in [0, 100], got {args.max_drop}")
    if args.target_bytes is not None and args.target_bytes < 1:
        raise ValueError(f"--target-bytes must be >= 1, got {args.target_bytes}")
    if not 0 < args.validation <= 0.5:
        raise ValueError(f"--validation must be in (0, 0.5], got {args.validation}")
    if args.density is not None and not 0 < args.density <= 1:
        raise ValueError(f"--density must be in (0, 1], got {args.density}")
    if args.density is not None and args.sparsifier != "gmp":
        raise ValueError("--density applies to --sparsifier gmp")
    if not (np.isfinite(args.confidence) and args.confidence >= 0):
        raise ValueError(f"--confidence must be >= 0, got {args.confidence}")
    return {
        "confidence": args.confidence,
        "sparsifier": args.sparsifier,
        "density": args.density,
        "max_drop": args.max_drop,
        "target_bytes": args.target_bytes,
        "validation": args.validation,
        "hidden": _hidden(args.hidden),
        "optimizer": args.optimizer,
        "lam": args.lam,
        "penalty": args.penalty,
        "beta": args.beta,
        "group_beta": args.group_beta,
        "step": args.step,
        "step_decay": args.step_decay,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "fine_tune_epochs": args.fine_tune_epochs,
        "fine_tune_step": args.fine_tune_step,
        "dense_epochs": args.dense_epochs,
        "bits": args.bits,
        "seed": args.seed,
    }


def _require_matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError(
            "--plot needs matplotlib: pip install 'embedded-kernels[plot]'"
        ) from None
    return plt


def run_compress(args):
    """``demo`` and ``compress``: train, search, compress, print, save.  The
    exit status is 0 when the budget held on the test split, 3 when the
    tool reports a miss (the model is still written and printed)."""
    options = _options(args)
    if args.out:
        _output_file(args.out, "--out")
    if args.plot:
        _output_directory(args.plot, "--plot")
    plt = _require_matplotlib() if args.plot else None
    data = _dataset(getattr(args, "data", "digits"), options["seed"])
    progress = Progress(not args.quiet)
    try:
        with single_thread_blas():  # for the plots' runs too
            dense = pipeline.train_dense(
                data,
                options["hidden"],
                options["dense_epochs"],
                options["seed"],
                lambda *a: progress("dense", *a),
                options["validation"],
            )
            result = pipeline.compress(
                data,
                progress=progress,
                on_point=lambda point: progress.note(pipeline.format_point(point)),
                dense=dense,
                **options,
            )
            figures = (
                _plots(plt, data, options, result, args.plot, progress) if plt else []
            )
    finally:
        progress.close()
    if args.out:
        result.model.save(args.out)
    if args.json:
        output = result.as_dict()
        if args.out:
            output["model_file"] = args.out
        if figures:
            output["figures"] = figures
        print(json.dumps(output))
    else:
        print(pipeline.format_result(result))
        if args.out:
            print(f"model written to {args.out}")
        for path in figures:
            print(f"figure written to {path}")
    return 0 if result.met else 3


def _plots(plt, data, options, result, directory, progress):
    """The search's points and the loss curves, as PNGs in ``directory``."""
    os.makedirs(directory, exist_ok=True)
    points = sorted(result.search, key=lambda p: p["compression_ratio"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        [p["compression_ratio"] for p in points],
        [100 * p["estimated_accuracy"] for p in points],
        "o-",
        label="search (estimated, validation)",
    )
    for p in points:
        ax.annotate(
            f"{p['beta']:.2g}",
            (p["compression_ratio"], 100 * p["estimated_accuracy"]),
            fontsize=7,
        )
    ax.plot(
        [result.compression_ratio],
        [100 * result.accuracy],
        "r*",
        ms=12,
        label="deployed (test)",
    )
    reference = 100 * result.budget["dense_validation_accuracy"]
    ax.axhline(reference, color="gray", ls="--", label="dense (validation)")
    if result.budget["max_drop"] is not None:
        ax.axhline(
            reference - result.budget["max_drop"],
            color="gray",
            ls=":",
            label="budget",
        )
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio (dense float32 bytes / model file bytes)")
    ax.set_ylabel("accuracy (%)")
    sweep_path = os.path.join(directory, "accuracy_vs_compression.png")
    _save(
        plt,
        fig,
        ax,
        f"{data.name}: {options['optimizer']}, {options['penalty']}",
        sweep_path,
    )

    from kernels.train import train_mlp

    fit, _ = pipeline.validation_split(data, options["validation"], options["seed"])
    X = pipeline.standardised(fit)[0]
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (label, optimizer, lam) in enumerate(CURVES):
        trained = train_mlp(
            X,
            fit.y_train,
            options["hidden"],
            optimizer=optimizer,
            lam=lam,
            penalty=options["penalty"],
            beta=result.settings["beta"],
            group_beta=options["group_beta"],
            epochs=options["epochs"],
            batch_size=options["batch_size"],
            seed=options["seed"],
        )
        history = trained.history
        ax.plot([h["ifos"] for h in history], [h["loss"] for h in history], label=label)
        progress("curves", i + 1, len(CURVES), history[-1]["loss"])
    ax.set_yscale("log")
    ax.set_xlabel("IFOs (single-sample gradients)")
    ax.set_ylabel("training loss (cross-entropy)")
    curves_path = os.path.join(directory, "loss_vs_ifos.png")
    _save(
        plt,
        fig,
        ax,
        f"{data.name}: penalty {options['penalty']}, "
        f"beta {result.settings['beta']:.3g}",
        curves_path,
    )
    return [sweep_path, curves_path]


def _save(plt, fig, ax, title, path):
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_predict(args):
    """``predict``: load the model (NumPy and the compiled kernels only),
    print accuracy and latency on the data file's test set."""
    from kernels.nn import SparseMLP

    model = SparseMLP.load(
        input_file(args.model, "MODEL", "no such model file"), backend=args.backend
    )
    if args.data == "digits":
        data = pipeline.load_digits(args.seed)
        X, labels = data.X_test, data.classes[data.y_test]
    else:
        X, labels = _test_set(input_file(args.data, "--data"))
    if X.shape[1] != model.in_features:
        raise ValueError(
            f"the model takes {model.in_features} features but the data has "
            f"{X.shape[1]}"
        )
    if model.classes is None:
        raise ValueError("the model file has no class labels")
    start = time.perf_counter()
    predicted = model.predict(X)
    seconds = time.perf_counter() - start
    if predicted.dtype.kind != labels.dtype.kind and not (
        predicted.dtype.kind in "iu" and labels.dtype.kind in "iu"
    ):
        raise ValueError(
            f"the model's labels ({predicted.dtype}) and the data's "
            f"({labels.dtype}) are of different kinds"
        )
    accuracy = float(np.mean(predicted == labels))
    forward_one = functools.partial(model.forward, np.ascontiguousarray(X[0]))
    forward_one()  # warm-up
    batch1 = median_seconds(forward_one)
    result = {
        "model": args.model,
        "samples": len(X),
        "accuracy": accuracy,
        "nnz": model.nnz,
        "bytes": model.nbytes,
        "sizes": model.sizes(),
        "seconds": seconds,
        "batch1_seconds": batch1,
        "backend": model.backend or "default",
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(model.summary())
        print(
            f"\naccuracy {100 * accuracy:.2f}% on {len(X):,} samples; whole set "
            f"{1e3 * seconds:.2f} ms; one sample {1e6 * batch1:.1f} us"
        )
    return 0


def _test_set(path):
    """(X, y) of an .npz data file: X_test and y_test, or X and y."""
    arrays = pipeline.read_samples(path, [("X_test", "y_test"), ("X", "y")])
    X, y = (
        arrays[k] for k in (("X_test", "y_test") if "X_test" in arrays else ("X", "y"))
    )
    return X.astype(np.float32), y
