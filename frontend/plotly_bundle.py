"""plotly.js's *cartesian* partial bundle for the dashboard, served in place of the full bundle.

Every figure the dashboard draws is a heatmap, a scatter or a bar: all in plotly.js's cartesian
bundle, which is 1.5 MB against the full bundle's 4.8 MB. On a 2-core machine the browser spent about
1.4 s of every trace-page load evaluating the full bundle before it could draw anything; the partial
bundle of the same plotly.js version cuts that to a third.

The bundle is not in the repository (it is plotly's code, MIT licence): ``python -m frontend.plotly_bundle``
(run by ``scripts/setup`` and the Dockerfile) downloads the npm package
``plotly.js-cartesian-dist-min`` at the version of plotly.js that the installed ``plotly`` ships,
checks it against the registry's sha512 integrity, and writes ``plotly-cartesian.min.js`` and its
``LICENSE`` into ``frontend/vendor/`` (or ``LAYERTRACER_PLOTLY_BUNDLE``, a file path).

``install(app)`` makes a Dash app answer plotly.js requests with that file when it is there and its
version header matches; otherwise Dash serves its full bundle as usual, so a machine without the file
(or with a stale one) loses speed, never figures.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import logging
import os
import re
import sys
import tarfile
import urllib.request
from functools import lru_cache
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

PACKAGE = "plotly.js-cartesian-dist-min"
FILE_NAME = "plotly-cartesian.min.js"
DEFAULT_REGISTRY = "https://registry.npmjs.org"
ENV_PATH = "LAYERTRACER_PLOTLY_BUNDLE"
# The first lines of the file name the bundle and its version: "plotly.js (cartesian - minified) v4.1.1".
_HEADER = re.compile(r"plotly\.js \(cartesian[^)]*\) v(\d+\.\d+\.\d+)")


def plotly_js_version() -> str:
    """The plotly.js version the installed ``plotly`` Python package ships (and Dash serves)."""
    from plotly.offline import get_plotlyjs_version

    return get_plotlyjs_version()


def bundle_path() -> Path:
    """Where the bundle lives: ``LAYERTRACER_PLOTLY_BUNDLE`` or ``frontend/vendor/plotly-cartesian.min.js``."""
    override = os.environ.get(ENV_PATH)
    return Path(override) if override else Path(__file__).resolve().parent / "vendor" / FILE_NAME


def bundle_version(path: Path) -> Optional[str]:
    """The plotly.js version in the bundle's header comment, or None if the file is missing or is not one."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(400).decode("utf-8", "replace")
    except OSError:
        return None
    match = _HEADER.search(head)
    return match.group(1) if match else None


@lru_cache(maxsize=4)
def usable_bundle(path: Optional[Path] = None, want: Optional[str] = None) -> Optional[Path]:
    """The bundle to serve, or None (then Dash's full bundle is used): it must exist and be the same
    plotly.js version as the installed plotly, whose figure JSON it will draw."""
    path = path or bundle_path()
    want = want or plotly_js_version()
    have = bundle_version(path)
    if have is None:
        log.info("no plotly.js cartesian bundle at %s: serving the full bundle (python -m frontend.plotly_bundle fetches it)",
                 path)
        return None
    if have != want:
        log.warning("the plotly.js cartesian bundle at %s is v%s, plotly needs v%s: serving the full bundle "
                    "(python -m frontend.plotly_bundle fetches the right one)", path, have, want)
        return None
    return path


def install(app, path: Optional[Path] = None) -> Optional[Path]:
    """Answer the app's plotly.js requests with the cartesian bundle when it is usable; returns its path."""
    bundle = usable_bundle(path or bundle_path())
    if bundle is None:
        return None
    from flask import request, send_file

    # dcc.Graph loads plotly.js lazily from "<prefix>_dash-component-suites/plotly/package_data/plotly.min.js"
    # (fingerprinted as plotly.v<...>.min.js when Dash lists it itself).
    folder = f"{app.config.routes_pathname_prefix}_dash-component-suites/plotly/package_data/"
    pattern = re.compile(re.escape(folder) + r"plotly(\.v[^/]*)?\.min\.js$")

    def serve_cartesian_bundle():
        if request.method == "GET" and pattern.match(request.path):
            response = send_file(bundle, mimetype="application/javascript", max_age=3600, conditional=True)
            response.headers["X-LayerTracer-Plotly"] = "cartesian"
            return response
        return None

    app.server.before_request(serve_cartesian_bundle)
    return bundle


# -- fetching ------------------------------------------------------------------------------------------

def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (https registry URL)
        return response.read()


def fetch(version: Optional[str] = None, dest: Optional[Path] = None, registry: Optional[str] = None,
          timeout: float = 60.0) -> Path:
    """Download the bundle for ``version`` (default: plotly's plotly.js) into ``dest``; returns the file.

    Checks the tarball against the registry's ``dist.integrity`` (sha512) before unpacking two named
    members only (the bundle and its LICENSE). Raises RuntimeError with one line on any failure.
    """
    version = version or plotly_js_version()
    dest = dest or bundle_path()
    registry = (registry or os.environ.get("npm_config_registry") or DEFAULT_REGISTRY).rstrip("/")
    if bundle_version(dest) == version:
        return dest
    try:
        meta = json.loads(_get(f"{registry}/{PACKAGE}/{version}", timeout))
        dist = meta["dist"]
        tarball = _get(dist["tarball"], timeout)
    except Exception as exc:  # network, HTTP or JSON errors: one line for the user
        raise RuntimeError(f"could not download {PACKAGE}@{version} from {registry}: {exc}") from None
    algorithm, _, expected = str(dist.get("integrity", "")).partition("-")
    if algorithm != "sha512" or base64.b64decode(expected) != hashlib.sha512(tarball).digest():
        raise RuntimeError(f"{PACKAGE}@{version}: the download does not match the registry's sha512 integrity")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        members = {m.name: m for m in archive.getmembers() if m.isfile()}
        try:
            script = archive.extractfile(members[f"package/{FILE_NAME}"]).read()
            licence = archive.extractfile(members["package/LICENSE"]).read()
        except KeyError as exc:
            raise RuntimeError(f"{PACKAGE}@{version} has no {exc.args[0]}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(script)
    os.replace(tmp, dest)
    (dest.parent / "LICENSE-plotly.js").write_bytes(licence)
    if bundle_version(dest) != version:
        raise RuntimeError(f"{dest} does not carry the plotly.js v{version} header")
    usable_bundle.cache_clear()
    return dest


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Download plotly.js's cartesian bundle for the dashboard.")
    parser.add_argument("--version", default=None, help="plotly.js version (default: the one plotly ships)")
    parser.add_argument("--dest", type=Path, default=None, help=f"the file to write (default: {bundle_path()})")
    parser.add_argument("--registry", default=None, help=f"npm registry (default: {DEFAULT_REGISTRY})")
    args = parser.parse_args(argv)
    try:
        path = fetch(args.version, args.dest, args.registry)
    except RuntimeError as exc:
        print(f"error: {exc}; the dashboard will serve plotly's full bundle", file=sys.stderr)
        return 1
    print(f"plotly.js cartesian bundle v{bundle_version(path)}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
