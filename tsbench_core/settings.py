"""Settings that can come from several places, and the one order in which they win.

Everywhere in tsbench: **command-line option > environment variable > spec > default**. A setting given on the
command line is meant for this invocation, the environment for this machine or session, the spec for the
benchmark wherever it runs; the default applies when none of them says anything.
"""

from __future__ import annotations

import os

DATA_DIR_ENV = "TSBENCH_DATA_DIR"


def resolve_data_dir(option: str | None, spec_value: str | None) -> str | None:
    """The data folder: ``--data-dir``, else ``$TSBENCH_DATA_DIR``, else the spec's ``data_dir`` (else None: the
    dataset plugin searches its download cache)."""
    return option or os.environ.get(DATA_DIR_ENV, "").strip() or spec_value or None
