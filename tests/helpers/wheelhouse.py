"""Wheels of pure-Python distributions installed in this interpreter, so a test can give a
fresh venv `pip install --no-index --find-links` without the network."""

from __future__ import annotations

import re
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

_SKIP = ("INSTALLER", "REQUESTED", "direct_url.json", "RECORD")


def wheel_of(name: str, out: Path) -> Path:
    """A py3-none-any wheel of the installed distribution `name`, written into `out`."""
    dist = metadata.distribution(name)
    files = [f for f in dist.files or [] if not str(f).startswith("..")]
    base = Path(str(dist.locate_file("")))
    dist_name = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
    info = f"{dist_name}-{dist.version}.dist-info"
    path = out / f"{dist_name}-{dist.version}-py3-none-any.whl"
    written: list[str] = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
        for file in files:
            rel = str(file)
            if "__pycache__" in rel or rel.endswith(".pyc"):
                continue
            parts = Path(rel).parts
            if parts[0].endswith(".dist-info"):
                if parts[-1] in _SKIP:
                    continue
                rel = "/".join((info, *parts[1:]))
            whl.write(base / file, rel)
            written.append(rel)
        if f"{info}/WHEEL" not in written:
            whl.writestr(
                f"{info}/WHEEL",
                "Wheel-Version: 1.0\nGenerator: cdeq-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            )
            written.append(f"{info}/WHEEL")
        whl.writestr(f"{info}/RECORD", "".join(f"{r},,\n" for r in [*written, f"{info}/RECORD"]))
    return path


def wheelhouse(roots: list[str], out: Path) -> list[str]:
    """Wheels of `roots` and of everything they require here (extras left out), into `out`;
    the names of the distributions written."""
    out.mkdir(parents=True, exist_ok=True)
    seen: list[str] = []
    todo = list(roots)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.append(key)
        wheel_of(name, out)
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen
