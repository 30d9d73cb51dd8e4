"""Property test of the manifest and lab export readers (issue 11).

Random rows, random value types, random missing keys: every input either
loads with every particle accounted for, or fails with exactly one
``Error:`` line and exit code 2 — never a traceback. Run through the command
line (``dataset info --json``) as a user would. Small enough for CI: a few
dozen examples each, on 24 px images.
"""

import csv
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from liposome_bench.cli import cli

IMAGES = ("a.png", "b.png", "sub/c.png")
SETTINGS = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def image_dir():
    """Three small ring images every example's dataset links to."""
    base = Path(tempfile.mkdtemp(prefix="lb-property-"))
    yy, xx = np.mgrid[:24, :24]
    ring = np.abs(np.hypot(yy - 11.5, xx - 11.5) - 7) < 1.5
    image = np.where(ring, 60, 190).astype(np.uint8)
    for name in IMAGES:
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(base / name)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _fresh(image_dir: Path) -> Path:
    root = Path(tempfile.mkdtemp(prefix="lb-example-"))
    (root / "images").symlink_to(image_dir, target_is_directory=True)
    return root


def _assert_loads_or_one_error(path, expected_count):
    """Exit 0 with every particle read, or exit 2 with one Error: line."""
    result = CliRunner().invoke(cli, ["dataset", "info", str(path), "--json"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback: the property fails
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        info = json.loads(result.stdout)
        assert info["n_particles"] == expected_count, (info["n_particles"], expected_count)
        return "loaded"
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    return "error"


# Values a careless or hostile export might hold.
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    _text,
)
_any = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=6,
)
_image_names = st.one_of(
    st.sampled_from(IMAGES),
    st.sampled_from(["missing.png", "../a.png", "/etc/passwd", "sub\\c.png", "", " a.png", "sub"]),
    _any,
)
_codes = st.one_of(st.sampled_from([3, 4, 5, 7, 8, 10, 6, "3", 4.0, -1]), _any)


@st.composite
def export_objects(draw):
    """Mostly well-formed particle objects (so that some inputs load), each
    with a chance of a key dropped, replaced by a random value, or added, or
    of the whole object being any JSON value."""
    objects = []
    for number in range(draw(st.integers(1, 4))):
        obj = {
            "Id": draw(st.sampled_from([number + 1, str(number + 1)])),
            draw(st.sampled_from(["Image", "Bmp"])): draw(st.sampled_from(IMAGES)),
            "Class": draw(st.sampled_from([3, 4, 5])),
        }
        if draw(st.booleans()):
            obj["PixelSize"] = 0.84
        for _ in range(draw(st.integers(0, 2))):
            key = draw(
                st.sampled_from(
                    ["Id", "Image", "Bmp", "Class", "Label", "PixelSize", "Micrograph", "extra"]
                )
            )
            action = draw(st.sampled_from(["drop", "replace", "replace"]))
            if action == "drop":
                obj.pop(key, None)
            elif key in ("Image", "Bmp"):
                obj[key] = draw(_image_names)
            elif key == "Class":
                obj[key] = draw(_codes)
            else:
                obj[key] = draw(_any)
        objects.append(obj if draw(st.integers(0, 9)) else draw(_any))
    return objects


@SETTINGS
@given(objects=export_objects(), concatenated=st.booleans())
def test_export_reader_loads_every_particle_or_gives_one_error_line(
    image_dir, objects, concatenated
):
    root = _fresh(image_dir)
    try:
        if concatenated and all(isinstance(o, dict) for o in objects):
            text = "\n".join(json.dumps(o) for o in objects)
        else:
            text = json.dumps(objects)
        (root / "particles.json").write_text(text, encoding="utf-8")
        _assert_loads_or_one_error(root, len(objects))
    finally:
        shutil.rmtree(root, ignore_errors=True)


_cells = st.one_of(
    st.sampled_from(
        [
            "images/a.png",
            "images/b.png",
            "images/sub/c.png",
            "images/none.png",
            "../x.png",
            "",
            "spherical",
            "tubular",
            "0.5",
            "-1",
            "nan",
            "m1",
        ]
    ),
    _text,
)
_columns = st.lists(
    st.one_of(
        st.sampled_from(
            ["image", "label", "mask", "id", "pixel_size_nm", "Image", "LABEL", "session"]
        ),
        _text,
    ),
    min_size=1,
    max_size=6,
)


@st.composite
def manifests(draw):
    """Mostly well-formed manifests (image, label, id, ...), with random
    columns and cells mixed in."""
    if draw(st.integers(0, 4)):
        header = ["image", "label", "id"] + draw(
            st.lists(st.sampled_from(["mask", "pixel_size_nm", "session"]), max_size=2, unique=True)
        )
        header = draw(st.permutations(header))
    else:
        header = draw(_columns)
    rows = []
    for number in range(draw(st.integers(0, 4))):
        good = {
            "image": draw(st.sampled_from(["images/a.png", "images/b.png", "images/sub/c.png"])),
            "label": draw(st.sampled_from(["spherical", "tubular"])),
            "id": f"m{number}",
            "mask": "",
            "pixel_size_nm": "0.5",
            "session": "s1",
        }
        row = [good.get(name, "") for name in header]
        for _ in range(draw(st.integers(0, 2))):
            if row and draw(st.booleans()):
                row[draw(st.integers(0, len(row) - 1))] = draw(_cells)
        if draw(st.integers(0, 5)) == 0:
            row = draw(st.lists(_cells, max_size=len(header) + 1))
        rows.append(row)
    return header, rows


@SETTINGS
@given(manifest=manifests())
def test_manifest_reader_loads_every_row_or_gives_one_error_line(image_dir, manifest):
    header, rows = manifest
    root = _fresh(image_dir)
    try:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(rows)
        (root / "m.csv").write_text(buffer.getvalue(), encoding="utf-8")
        particles = sum(1 for row in rows if any(c.strip() for c in row))
        _assert_loads_or_one_error(root / "m.csv", particles)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_property_can_load_and_can_fail(image_dir):
    """The generators reach both outcomes: a valid export loads, a broken one fails."""
    root = _fresh(image_dir)
    try:
        objects = [{"Id": 1, "Image": "a.png", "Class": 3}, {"Id": 2, "Image": "b.png", "Class": 4}]
        (root / "particles.json").write_text(json.dumps(objects))
        assert _assert_loads_or_one_error(root, 2) == "loaded"
        (root / "particles.json").write_text(json.dumps(objects + [{"Id": 2}]))
        assert _assert_loads_or_one_error(root, 3) == "error"
    finally:
        shutil.rmtree(root, ignore_errors=True)
