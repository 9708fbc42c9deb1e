"""Local Sphinx extension for the localprops book: an offline-clean site.

Two jobs, both about what a reader's browser loads:

1. Drop duplicated ``<script>`` entries from every page. With Sphinx 7.4,
   sphinx-thebe's inline script ``const THEBE_JS_URL = ...`` is emitted
   twice, and the browser logs "Identifier 'THEBE_JS_URL' has already been
   declared" on every page. Keeping the first of equal entries removes it.
2. Check, before anything is read, that MathJax is served by the site itself
   (``mathjax_path`` relative to ``_static/``, the files in one of the
   ``html_extra_path`` folders). If the files are missing the build stops
   and says how to fetch them (``scripts/fetch_mathjax.sh``). Setting
   ``LOCALPROPS_MATHJAX_CDN=1`` builds anyway with MathJax from its public
   CDN, for a quick preview on a machine with internet and without npm.

Registered in ``_config.yml`` under ``sphinx.local_extensions``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

MATHJAX_CDN = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"
FETCH_HINT = "scripts/fetch_mathjax.sh"


def _script_key(script: Any) -> Any:
    """What makes two script entries the same tag on the page.

    An inline script may come with ``filename`` ``None`` or ``''``
    (sphinx-thebe and sphinx-togglebutton add theirs both ways), so both
    count as no file.
    """
    filename = getattr(script, "filename", None)
    attributes = getattr(script, "attributes", None)
    if attributes is None:                 # an old-style plain string
        return ("str", str(script))
    return (os.fspath(filename) if filename else "",
            tuple(sorted((key, str(value))
                         for key, value in attributes.items())))


def _dedupe_scripts(app: Sphinx, pagename: str, templatename: str,
                    context: dict[str, Any], doctree: Any) -> None:
    """Keep only the first of equal entries of the page's script files."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[Any] = set()
    unique = []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    if len(unique) != len(scripts):
        # the context list is shared with the builder: replace, don't mutate
        context["script_files"] = unique


def _check_local_mathjax(app: Sphinx, config: Config) -> None:
    """Fail early, and clearly, when the vendored MathJax files are missing."""
    path = config.mathjax_path or ""
    if "://" in path or path.startswith("//"):
        return                    # a remote MathJax was asked for on purpose
    relative = Path("_static") / path
    extra_dirs = [Path(app.confdir, entry) for entry in config.html_extra_path]
    static_dirs = [Path(app.confdir, entry)
                   for entry in config.html_static_path]
    candidates = [d / relative for d in extra_dirs]
    candidates += [d / path for d in static_dirs]
    if any(candidate.is_file() for candidate in candidates):
        return
    if os.environ.get("LOCALPROPS_MATHJAX_CDN", "") not in ("", "0"):
        logger.info("localprops_site: MathJax not vendored; "
                    "LOCALPROPS_MATHJAX_CDN is set, using %s", MATHJAX_CDN)
        config.mathjax_path = MATHJAX_CDN
        config.html_extra_path = [entry for entry in config.html_extra_path
                                  if Path(app.confdir, entry).is_dir()]
        return
    looked = ", ".join(str(c) for c in candidates) or "(no html_extra_path)"
    raise ExtensionError(
        f"MathJax is not vendored: mathjax_path={path!r} was not found "
        f"(looked for {looked}). Run `{FETCH_HINT}` (needs npm) to put "
        "MathJax 3 in _build/vendor/mathjax, or set LOCALPROPS_MATHJAX_CDN=1 "
        "to build a preview that loads MathJax from the internet.")


def setup(app: Sphinx) -> dict[str, Any]:
    # before Sphinx's own html_extra_path check (priority 800) warns
    app.connect("config-inited", _check_local_mathjax, priority=100)
    # late, after every extension has added its scripts to the page
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"version": "0.1", "parallel_read_safe": True,
            "parallel_write_safe": True}
