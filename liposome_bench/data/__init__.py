"""The data layer behind ``liposome_bench.dataset``, one concern per module.

``types`` (problems, particles, datasets, the layout's names), ``images``
(decoding and guards), ``masks`` (mask derivation), ``kernel`` (what every
reader shares: entries, problem lines, labels, CSV rows), ``formats`` (one
module per on-disk format, each with its ``FORMAT`` entry), ``readers`` (the
format table and ``load_dataset``), ``groups``, ``writer`` (the lab export
writer), ``checks`` and ``describe``. ``liposome_bench.dataset`` re-exports
their public names; docs/architecture.md maps them.

Every module here logs to the ``liposome_bench.dataset`` logger, the name
the messages had before the split (the CLI prints it; filters keep working).
"""
