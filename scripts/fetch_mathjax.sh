#!/usr/bin/env bash
# Vendor MathJax 3 so that the book's pages typeset equations without the
# internet. The site must not depend on a CDN: the HTML build fails with a
# message pointing here when the files are missing.
#
# Usage: scripts/fetch_mathjax.sh [DEST]   (default: _build/vendor/mathjax)
#
# DEST is the `html_extra_path` entry of _config.yml: its contents are copied
# to the root of the built site, so MathJax is served from
# `_static/mathjax/tex-mml-chtml.js` (the `mathjax_path` setting). Only the
# files the CommonHTML output can request are kept (about 8 MB of the 24 MB
# package): the combined component, the TeX/MathML inputs and extensions the
# TeX input autoloads, the CommonHTML woff-v2 fonts, the menu, and the
# accessibility components (a11y, sre) the menu can switch on.
#
# Needs npm (any registry mirror set in npm's own config works). Re-running
# is cheap: it does nothing when the pinned version is already in place.
set -euo pipefail

MATHJAX_VERSION="${MATHJAX_VERSION:-3.2.2}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$root/_build/vendor/mathjax}"
target="$dest/_static/mathjax"
stamp="$target/VERSION"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$MATHJAX_VERSION" \
      && -f "$target/tex-mml-chtml.js" ]]; then
    echo "MathJax $MATHJAX_VERSION already in $target"
    exit 0
fi
command -v npm >/dev/null || {
    echo "error: npm not found; install Node.js/npm (e.g. apt-get install -y npm)" >&2
    exit 1
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack "mathjax@$MATHJAX_VERSION" --silent >/dev/null)
tar -xzf "$work"/mathjax-*.tgz -C "$work"
es5="$work/package/es5"
[[ -f "$es5/tex-mml-chtml.js" ]] || {
    echo "error: the npm package mathjax@$MATHJAX_VERSION has no es5/tex-mml-chtml.js" >&2
    exit 1
}

rm -rf "$target"
mkdir -p "$target/output"
cp "$es5/tex-mml-chtml.js" "$target/"
cp -r "$es5/input" "$es5/a11y" "$es5/ui" "$es5/sre" "$es5/adaptors" "$target/"
cp -r "$es5/output/chtml" "$es5/output/chtml.js" "$target/output/"
cp "$work/package/LICENSE" "$target/LICENSE"
echo "$MATHJAX_VERSION" > "$stamp"
echo "MathJax $MATHJAX_VERSION vendored in $target ($(du -sh "$target" | cut -f1))"
