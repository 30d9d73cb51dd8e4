"""One module per dataset format on disk, each a reader and its
``FORMAT`` entry of the reader table (``liposome_bench.data.readers``):
``lab_export``, ``manifest``, ``class_folders``, ``mrc_stack``. Every layout
is described in docs/data-formats.md."""
