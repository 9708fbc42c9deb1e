"""Progress bars that stay out of rendered pages.

A tqdm bar in a notebook becomes an ipywidget; on the static website that
widget would load require.js and the widget manager from a CDN. The book's
build sets ``TQDM_DISABLE=1``; :func:`progress_bar` honours it even where a
caller asks for a bar explicitly (tqdm itself lets an explicit ``disable=``
win over the environment).
"""
from __future__ import annotations

import os

from tqdm.auto import tqdm


def progress_enabled(requested: bool = True) -> bool:
    """False when ``requested`` is False or ``TQDM_DISABLE`` is set (to anything but 0)."""
    return bool(requested) and os.environ.get("TQDM_DISABLE", "").strip().lower() in (
        "", "0", "false")


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """A ``tqdm.auto`` bar, disabled as :func:`progress_enabled` says."""
    return tqdm(iterable, disable=not progress_enabled(enabled), **kwargs)
