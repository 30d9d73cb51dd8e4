"""The SVM bundle's feature schema (``feature-schema.json``): which features
the SVM takes, in which order (LIBSVM index), in which units, under which
version of their definitions.

``train`` writes it into an SVM bundle; ``predict`` checks it against the
features this liposome-bench computes before it classifies anything, so
a bundle whose features are defined differently (another feature set,
another unit, a renamed or reordered column, a newer schema) is refused in
one line instead of fed the wrong numbers. Software that runs the bundle's
ONNX or LIBSVM files reads the same file to know what to compute.
"""

from __future__ import annotations

from liposome_bench.errors import BundleError
from liposome_bench.features import EDP_GRID_NM, EDP_GRID_PX, feature_columns
from liposome_bench import __version__

#: The file's name in a bundle.
FEATURE_SCHEMA_FILE = "feature-schema.json"
#: The file's kind and format version; a newer version is refused.
FEATURE_SCHEMA_KIND = "liposome-bench feature schema"
FEATURE_SCHEMA_VERSION = 1

_UNITS = {
    "area_px": "px^2",
    "area_nm2": "nm^2",
    "perimeter_px": "px",
    "perimeter_nm": "nm",
    "circularity": "1",
    "diameter_px": "px",
    "length_nm": "nm",
    "max_width_nm": "nm",
    "max_width_px": "px",
    "mu20": "px^4",
    "mu02": "px^4",
    "mu30": "px^5",
    "mu03": "px^5",
    "snr": "1",
}


def feature_unit(name: str, units: str = "nm") -> str:
    """The unit of one feature column as this liposome-bench computes it
    (docs/features.md): e.g. ``nm^2`` for ``area_nm2``, ``fraction of mask
    pixels`` for a histogram bin, and for an edge density profile point the
    distance from the membrane it is sampled at."""
    if name in _UNITS:
        return _UNITS[name]
    if name.startswith("hist_"):
        return "fraction of mask pixels"
    if name.startswith("rdp_"):
        return "mean intensity (grey levels), at a fraction of 1.2 outer radii"
    if name.startswith("edp_"):
        grid, unit = (EDP_GRID_NM, "nm") if units == "nm" else (EDP_GRID_PX, "px")
        return f"mean intensity (grey levels), at {grid[int(name[4:])]:g} {unit} from the membrane"
    return "unknown"


def make_feature_schema(feature_set: str, source: str, units: str, names) -> dict:
    """The schema of an SVM trained on the columns ``names`` (in LIBSVM
    index order) of ``feature_set`` computed with ``units``."""
    return {
        "kind": FEATURE_SCHEMA_KIND,
        "schema_version": FEATURE_SCHEMA_VERSION,
        "feature_set": feature_set,
        "source": source,
        "units": units,
        "definitions": f"docs/features.md of liposome-bench {__version__}",
        "features": [
            {"index": i, "name": name, "unit": feature_unit(name, units)}
            for i, name in enumerate(names, start=1)
        ],
    }


def check_feature_schema(schema, card_input: dict, where) -> None:
    """Refuse a bundle whose feature schema is not what this liposome-bench
    computes for the card's feature set and units, or not the card's
    features.

    Raises
    ------
    BundleError
        One line naming the first difference and the fix.
    """
    if not isinstance(schema, dict) or schema.get("kind") != FEATURE_SCHEMA_KIND:
        raise BundleError(
            f"{where} is not a liposome-bench feature schema. Train the bundle again."
        )
    version = schema.get("schema_version")
    if (
        not isinstance(version, int)
        or isinstance(version, bool)
        or version > FEATURE_SCHEMA_VERSION
    ):
        raise BundleError(
            f"{where} is a feature schema of version {version!r}; this liposome-bench "
            f"({__version__}) reads up to version {FEATURE_SCHEMA_VERSION}. Upgrade liposome-bench."
        )
    units = card_input.get("units", "nm")
    for key, expected in (
        ("feature_set", card_input.get("feature_set")),
        ("source", card_input.get("feature_source")),
        ("units", units),
    ):
        if schema.get(key) != expected:
            raise BundleError(
                f"{where}: {key} is {schema.get(key)!r} but the model card's is "
                f"{expected!r}. Train the bundle again."
            )
    features = schema.get("features")
    if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
        raise BundleError(f"{where}: features is not a list of objects. Train the bundle again.")
    names = [f.get("name") for f in features]
    if names != list(card_input.get("features", [])):
        raise BundleError(
            f"{where}: its features are not the model card's input.features (in order). "
            "Train the bundle again."
        )
    computed = feature_columns(card_input["feature_set"], units)
    for i, feature in enumerate(features, start=1):
        name = feature["name"]
        if feature.get("index") != i:
            raise BundleError(
                f"{where}: feature {name!r} has index {feature.get('index')!r}, expected {i} "
                "(LIBSVM order). Train the bundle again."
            )
        if name not in computed:
            raise BundleError(
                f"{where}: feature {name!r} is not one this liposome-bench ({__version__}) "
                f"computes for feature set {card_input['feature_set']} in {units}. Use the "
                "liposome-bench the bundle was trained with, or train it again."
            )
        now = feature_unit(name, units)
        if feature.get("unit") != now:
            raise BundleError(
                f"{where}: feature {name!r} is in {feature.get('unit')!r}; this "
                f"liposome-bench ({__version__}) computes it in {now!r}. Use the "
                "liposome-bench the bundle was trained with, or train it again."
            )
