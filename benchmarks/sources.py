"""Public 1 mm brain MRI for the benchmark, fetched once from PyPI and Debian, then read from a cache.

* MNI ICBM152 2009a T1 (brain only, 197x233x189 at 1 mm) from the nilearn wheel;
* Colin27 T1 (skull-stripped ``ch2bet``, 181x217x181 at 1 mm) from Debian's ``mricron-data``.

Both are the full-resolution versions of the 2 mm pair bundled in the package (``shmoareg/sample_data``)
(attribution in LICENSE). ``pip download`` and ``apt-get download`` fetch the packages into the
cache; nothing is installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

NILEARN_REQUIREMENT = "nilearn==0.14.1"
NILEARN_MEMBER = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
MRICRON_PACKAGE = "mricron-data"
MRICRON_TEMPLATES = "usr/share/mricron/templates"
COLIN27_TEMPLATE = "ch2bet.nii.gz"


class SourceUnavailable(RuntimeError):
    """A public image could not be fetched (no network, no pip or apt-get); the message says which."""


def _run(command: list[str], folder: Path) -> None:
    try:
        subprocess.run(command, cwd=folder, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        raise SourceUnavailable(f"{' '.join(command[:3])} failed: {detail.strip().splitlines()[-1:]}") from error


def nilearn_wheel(cache: Path) -> Path:
    """nilearn's wheel (it carries the MNI152 template and the fsaverage5 surfaces), fetched into ``cache`` once."""
    cache.mkdir(parents=True, exist_ok=True)
    wheel = next(cache.glob("nilearn-*.whl"), None)
    if wheel is None:
        _run([sys.executable, "-m", "pip", "download", NILEARN_REQUIREMENT, "--no-deps", "--only-binary", ":all:",
              "--dest", str(cache)], cache)
        wheel = next(cache.glob("nilearn-*.whl"))
    return wheel


def _mni152(cache: Path) -> Path:
    target = cache / "mni152_2009a_t1_1mm.nii.gz"
    if not target.exists():
        with zipfile.ZipFile(nilearn_wheel(cache)) as archive, archive.open(NILEARN_MEMBER) as source, \
                open(target, "wb") as out:
            shutil.copyfileobj(source, out)
    return target


def mricron_template(cache: Path, name: str) -> Path:
    """``usr/share/mricron/templates/<name>`` of Debian's ``mricron-data``, downloaded and unpacked in ``cache``
    on first use."""
    cache = cache.resolve()
    extracted = cache / MRICRON_PACKAGE
    member = extracted / MRICRON_TEMPLATES / name
    if not member.exists():
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            raise SourceUnavailable(f"apt-get/dpkg-deb not found: {name} comes from Debian's {MRICRON_PACKAGE}")
        cache.mkdir(parents=True, exist_ok=True)
        package = next(cache.glob(f"{MRICRON_PACKAGE}_*.deb"), None)
        if package is None:
            _run(["apt-get", "download", MRICRON_PACKAGE], cache)
            package = next(cache.glob(f"{MRICRON_PACKAGE}_*.deb"))
        _run(["dpkg-deb", "-x", str(package), str(extracted)], cache)
    return member


def _colin27(cache: Path) -> Path:
    target = cache / "colin27_t1_1mm.nii.gz"
    if not target.exists():
        shutil.copyfile(mricron_template(cache, COLIN27_TEMPLATE), target)
    return target


def public_brains(cache: Path) -> dict[str, Path]:
    """Paths of the 1 mm ``mni152`` and ``colin27`` T1 images, fetched into ``cache`` on first use."""
    cache = cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    return {"mni152": _mni152(cache), "colin27": _colin27(cache)}
