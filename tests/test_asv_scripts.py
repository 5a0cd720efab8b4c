"""The scripts around asv (scripts/asv-*): the pages' offline rewrite and
browser check, the regression check's choice of a base commit, the noise
ratios.  Behaviour only; they need the checkout (scripts/), so the
emulated ARM runs, which test a copy of tests/ alone, skip this file."""

import importlib.machinery
import importlib.util
import os
import pathlib
import re
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parent.parent / "scripts"
if not (SCRIPTS / "asv-pages").is_file():
    pytest.skip("scripts/ is not beside tests/", allow_module_level=True)


def _load(name):
    loader = importlib.machinery.SourceFileLoader(
        name.replace("-", "_"), str(SCRIPTS / name)
    )
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


pages = _load("asv-pages")
asv_ratios = _load("asv-ratios")


# asv-pages offline --------------------------------------------------------


def test_localise_points_cdn_tags_at_vendor_copies():
    html = (
        '<script src="https://code.jquery.com/jquery-3.3.1.min.js" '
        'integrity="sha256-abc" crossorigin="anonymous" '
        'onerror="js_load_failure()"></script>\n'
        '<link rel="stylesheet" href="https://cdn.example/bootstrap.min.css" '
        'integrity="sha256-x" crossorigin="anonymous">\n'
        '<script src="asv.js"></script>'
    )
    text, needed = pages.localise(html)
    assert needed == ["jquery-3.3.1.min.js", "bootstrap-3.1.0.min.css"]
    assert 'src="vendor/jquery-3.3.1.min.js"' in text
    assert 'href="vendor/bootstrap-3.1.0.min.css"' in text
    assert "integrity" not in text and "crossorigin" not in text
    assert 'onerror="js_load_failure()"' in text
    assert '<script src="asv.js"></script>' in text


def test_localise_refuses_an_unknown_cdn_address():
    with pytest.raises(ValueError, match="no local copy of https://cdn.x/new.js"):
        pages.localise('<script src="https://cdn.x/new.js"></script>')


def test_every_cdn_address_of_the_installed_asv_has_a_local_copy():
    asv = pytest.importorskip("asv")
    index = pathlib.Path(asv.__file__).parent / "www" / "index.html"
    text, needed = pages.localise(index.read_text(encoding="utf-8"))
    assert not re.search(r'<(script|link)\b[^>]*(src|href)="https?://', text)
    assert sorted(needed) == sorted(pages.VENDOR_FILES.values())


# asv-pages check ----------------------------------------------------------


def _png(image, filters):
    """An 8-bit PNG of ``image`` (h, w, channels), row y filtered with
    ``filters[y % len(filters)]``: the encoder side of read_png."""
    height, width, channels = image.shape
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows, previous = [], bytes(width * channels)
    for y in range(height):
        line = image[y].tobytes()
        kind = filters[y % len(filters)]
        out = bytearray()
        for i, value in enumerate(line):
            left = line[i - channels] if i >= channels else 0
            above = previous[i]
            upper_left = previous[i - channels] if i >= channels else 0
            if kind == 0:
                predictor = 0
            elif kind == 1:
                predictor = left
            elif kind == 2:
                predictor = above
            elif kind == 3:
                predictor = (left + above) >> 1
            else:
                p = left + above - upper_left
                pa, pb, pc = abs(p - left), abs(p - above), abs(p - upper_left)
                predictor = (
                    left if pa <= pb and pa <= pc else above if pb <= pc else upper_left
                )
            out.append((value - predictor) & 0xFF)
        rows.append(bytes([kind]) + bytes(out))
        previous = line

    def chunk(kind, body):
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("filters", [(0,), (1,), (2,), (3,), (4,), (0, 1, 2, 3, 4)])
def test_read_png_undoes_every_filter(channels, filters):
    image = np.random.default_rng(0).integers(0, 256, (9, 7, channels), dtype=np.uint8)
    np.testing.assert_array_equal(pages.read_png(_png(image, filters)), image)


def test_read_png_refuses_what_is_not_a_png():
    with pytest.raises(ValueError, match="not a PNG"):
        pages.read_png(b"GIF89a...")


def test_blank_problem_tells_a_blank_page_from_a_drawn_one():
    blank = np.full((90, 128, 3), 255, dtype=np.uint8)
    assert "differ from the background" in pages.blank_problem(blank)
    two_colours = blank.copy()
    two_colours[:, :64] = 0
    assert pages.blank_problem(two_colours) == "only 2 colours"
    drawn = np.random.default_rng(1).integers(0, 256, blank.shape, dtype=np.uint8)
    assert pages.blank_problem(drawn) is None


def test_page_problems():
    name = "bench_x.Y.time_z"
    good = f'<div>{name}</div><canvas class="flot-base"></canvas>'
    assert pages.page_problems(good, name, graph=True) == []
    assert pages.page_problems(f"<p>{name}</p>", name, graph=False) == []
    problems = pages.page_problems(
        "<h1>Can not determine continental origin of swallow.</h1>", name, graph=True
    )
    assert len(problems) == 3 and "error page" in problems[0]


# asv-ratios ---------------------------------------------------------------


def test_ratios_and_their_spread():
    runs = [
        ({"a": 1.0, "b": 2.0, "c": None}, {"a": 1.1, "b": 2.0, "c": 1.0}),
        ({"a": 1.0, "b": 2.0, "c": 1.0}, {"a": 0.8, "b": 1.0, "c": 1.0}),
    ]
    table = asv_ratios.ratios(runs)
    assert set(table) == {"a", "b"}  # c has no number in the first run
    assert table["a"] == pytest.approx([1.1, 0.8])
    assert asv_ratios.spread(table["a"]) == pytest.approx(1.25)
    assert asv_ratios.spread(table["b"]) == pytest.approx(2.0)
    assert asv_ratios.spread([1.0, 1.0]) == 1.0


# asv-regression: the base commit ------------------------------------------

needs_git = pytest.mark.skipif(
    shutil.which("git") is None or shutil.which("bash") is None,
    reason="needs git and bash",
)


def _git(cwd, *args):
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
    )
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


@pytest.fixture
def project(tmp_path):
    """A git repository holding the asv scripts, with ``commits`` commits."""

    def make(commits, where=tmp_path / "origin"):
        (where / "scripts").mkdir(parents=True)
        for name in ("asv-regression", "asv-common"):
            shutil.copy(SCRIPTS / name, where / "scripts" / name)
        _git(where, "init", "-q", "-b", "main")
        for i in range(commits):
            (where / "file").write_text(str(i))
            _git(where, "add", "-A")
            _git(where, "commit", "-q", "-m", f"commit {i}")
        return where

    return make


def _base_only(repo):
    return subprocess.run(
        ["bash", "scripts/asv-regression", "--base-only"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=dict(os.environ, GIT_CONFIG_GLOBAL=os.devnull),
    )


@needs_git
def test_the_base_is_the_first_parent(project):
    repo = project(3)
    result = _base_only(repo)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == _git(repo, "rev-parse", "HEAD^1")


@needs_git
def test_a_root_commit_passes_without_a_check(project):
    result = _base_only(project(1))
    assert result.returncode == 0, result.stderr
    assert "is a root commit: no regression check (passes)" in result.stdout


@needs_git
def test_a_shallow_clone_is_deepened_to_the_parent(project, tmp_path):
    origin = project(3)
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", "--depth", "1", origin.as_uri(), str(clone))
    assert _git(clone, "rev-parse", "--is-shallow-repository") == "true"
    result = _base_only(clone)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == _git(origin, "rev-parse", "HEAD^1")


@needs_git
def test_a_shallow_clone_that_cannot_be_deepened_passes(project, tmp_path):
    origin = project(3)
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", "--depth", "1", origin.as_uri(), str(clone))
    _git(clone, "remote", "remove", "origin")
    result = _base_only(clone)
    assert result.returncode == 0, result.stderr
    assert "could not be fetched: no regression check (passes)" in result.stdout


@needs_git
def test_the_machine_name_names_host_cpu_and_cores(project):
    repo = project(1)
    result = subprocess.run(
        ["bash", "-c", "source scripts/asv-common && asv_machine_name"],
        cwd=repo,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "KERNELS_ASV_MACHINE"},
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"[A-Za-z0-9._-]+-[a-z0-9-]+-\d+cpu", result.stdout.strip())
