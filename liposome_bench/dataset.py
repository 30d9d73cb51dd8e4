"""Particle datasets: types, readers, validation, the lab export writer.

This module is the data layer's public face: it re-exports the public names
of ``liposome_bench.data`` (one module per concern, mapped in
docs/architecture.md), so ``from liposome_bench.dataset import load_dataset``
keeps working.

A dataset is a list of particles. Each particle has an id, a label from its
problem's classes, a grayscale image that includes the particle's surround
(50 px on each side in the lab export, thesis section 3), a binary mask of the
particle, the pixel size in nm and the file it came from.

Readers (``load_dataset`` picks one from what the path is, through the
format table ``data.readers.READERS``; every layout is described in
docs/data-formats.md):

- ``load_export``: the lab particle export (what the lab's software writes and
  ``generate`` writes)::

      DIR/
        particles.json      one JSON object per particle (a JSON list, or
                            objects written one after another: both are read)
        images/<Image>      BMP, JPEG, PNG or TIFF, 8 or 16 bit
        masks/<stem>.png    the particle's mask, named after its image
                            (same stem; any of those formats)
        dataset.json        optional, written by ``write_export``: problem,
                            class order, description, synthetic or not
        folds/k5-seed0.json the stored folds (see ``liposome_bench.folds``)

- ``load_manifest``: a CSV with columns ``image``, ``label`` and optionally
  ``mask``, ``id``, ``pixel_size_nm``.
- ``load_folders``: ``DIR/<class name>/<images>``.
- ``load_mrc``: an MRC particle stack with a ``<stack stem>.csv`` of labels.

Every reader validates every particle and never drops one silently: each
problem is one line naming the file or JSON object and the fix; a reader
raises ``DatasetError`` with the first, ``check_dataset`` returns them all.
Where no mask is given one is derived (``derive_mask``) and
``Particle.mask_derived`` records it.
"""

from liposome_bench.data.checks import (
    check_dataset,
    check_trainable,
    class_count_problems,
    inspect_dataset,
)
from liposome_bench.data.describe import (
    LOW_SURROUND_PX,
    THESIS_SURROUND_PX,
    describe_dataset,
    particle_sizes,
    surround_warning,
    surrounds,
)
from liposome_bench.data.formats.class_folders import load_folders
from liposome_bench.data.formats.lab_export import (
    EXPORT_FEATURE_KEYS,
    EXPORT_KEYS,
    load_export,
    parse_export_json,
)
from liposome_bench.data.formats.manifest import load_manifest
from liposome_bench.data.formats.mrc_stack import MRC_EXTENSIONS, load_mrc
from liposome_bench.data.groups import (
    CVAT_GROUP_PATTERN,
    ROBOFLOW_GROUP_PATTERN,
    compile_group_pattern,
    group_key,
    set_groups,
    set_groups_from_file,
)
from liposome_bench.data.images import (
    DECODE_ERRORS,
    IMAGE_EXTENSIONS,
    MAX_IMAGE_SIDE,
    MIN_IMAGE_SIDE,
    gray_dtype,
    pil_to_array,
    rgb_to_gray,
)
from liposome_bench.data.kernel import LABEL_POLICIES, check_path, read_csv_rows
from liposome_bench.data.masks import derive_mask
from liposome_bench.data.readers import load_dataset
from liposome_bench.data.types import (
    ENCAPSULATION,
    EXPORT_JSON,
    FOLDS_DIR,
    IMAGES_DIR,
    LAMELLARITY,
    MANIFEST_COLUMNS,
    MASKS_DIR,
    META_JSON,
    PROBLEMS,
    Dataset,
    Particle,
    Problem,
    custom_problem,
    get_problem,
    hash_particles,
)
from liposome_bench.data.writer import check_read_back, write_export

__all__ = [
    "CVAT_GROUP_PATTERN",
    "DECODE_ERRORS",
    "Dataset",
    "hash_particles",
    "ENCAPSULATION",
    "EXPORT_FEATURE_KEYS",
    "EXPORT_JSON",
    "EXPORT_KEYS",
    "FOLDS_DIR",
    "IMAGES_DIR",
    "IMAGE_EXTENSIONS",
    "LABEL_POLICIES",
    "LAMELLARITY",
    "LOW_SURROUND_PX",
    "MANIFEST_COLUMNS",
    "MASKS_DIR",
    "MAX_IMAGE_SIDE",
    "META_JSON",
    "MIN_IMAGE_SIDE",
    "MRC_EXTENSIONS",
    "PROBLEMS",
    "Particle",
    "Problem",
    "ROBOFLOW_GROUP_PATTERN",
    "THESIS_SURROUND_PX",
    "check_dataset",
    "check_path",
    "check_read_back",
    "check_trainable",
    "class_count_problems",
    "compile_group_pattern",
    "custom_problem",
    "derive_mask",
    "describe_dataset",
    "get_problem",
    "gray_dtype",
    "group_key",
    "inspect_dataset",
    "load_dataset",
    "load_export",
    "load_folders",
    "load_manifest",
    "load_mrc",
    "parse_export_json",
    "particle_sizes",
    "pil_to_array",
    "read_csv_rows",
    "rgb_to_gray",
    "set_groups",
    "set_groups_from_file",
    "surround_warning",
    "surrounds",
    "write_export",
]
