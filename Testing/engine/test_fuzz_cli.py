"""Property-based fuzzing of ``shmoareg register``'s inputs (issue 13): random sizes (tiny ones too),
spacings, directions, pixel types, NaN/Inf, label values and option values.

Whatever the input, a run exits with a documented code other than "internal error", prints one line
starting with ``error:`` (and no traceback) when it fails, leaves nothing that looks like a result
when it fails, writes strict JSON when it succeeds, and never changes a byte of its inputs.
``make test`` runs a few dozen examples (derandomised, so CI is repeatable); set
``SHMOAREG_FUZZ_EXAMPLES`` for a longer run (benchmarks/README.md, "Fuzzing the command line").
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shmoareg.cli import main
from shmoareg.protocol import ExitCode
from torch_threads import one_torch_thread  # noqa: F401 (fixture)

EXAMPLES = int(os.environ.get("SHMOAREG_FUZZ_EXAMPLES", "30"))
ALLOWED = {ExitCode.OK, ExitCode.BAD_INPUT, ExitCode.OUT_OF_MEMORY, ExitCode.NO_SPACE}
PIXEL_TYPES = {"uint8": np.uint8, "int16": np.int16, "float32": np.float32, "float64": np.float64}
DIRECTIONS = {
    "identity": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "rotated": tuple(np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).ravel()),
    "flipped": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    "sheared": (1, 0.4, 0, 0, 1, 0, 0, 0, 1),
}

# A valid random case, then (half of the time) one thing made wrong, so that both the successful path
# and every refusal are exercised.
images = st.fixed_dictionaries({
    "size": st.tuples(*(st.integers(4, 14) for _ in range(3))),
    "spacing": st.tuples(*(st.sampled_from([0.5, 1.0, 2.5]) for _ in range(3))),
    "direction": st.sampled_from(["identity", "rotated", "flipped"]),
    "pixel": st.sampled_from(sorted(PIXEL_TYPES)),
    "content": st.just("random"),
    "seed": st.integers(0, 2 ** 16),
})
options = st.fixed_dictionaries({
    "--refine-steps": st.sampled_from(["0", "2"]),
    "--grid-spacing": st.sampled_from([None, "1.5", "3"]),
    "--smoothness": st.sampled_from([None, "0.5", "2"]),
    "--similarity": st.sampled_from([None, "auto", "lncc", "mind", "ngf"]),
    "--affine": st.sampled_from(["--affine", "--no-affine"]),
})
MUTATIONS = {
    "tiny": ("image", "size", (3, 12, 1)), "sheared": ("image", "direction", "sheared"),
    "constant": ("image", "content", "constant"), "nan": ("image", "content", "nan"),
    "inf": ("image", "content", "inf"),
    "negative labels": ("labels", None, "negative"), "huge labels": ("labels", None, "huge"),
    "fractional labels": ("labels", None, "fractional"), "empty labels": ("labels", None, "empty"),
    "negative steps": ("option", "--refine-steps", "-1"), "endless steps": ("option", "--refine-steps", "1000000000"),
    "nan spacing": ("option", "--grid-spacing", "nan"), "infinite spacing": ("option", "--grid-spacing", "inf"),
    "zero spacing": ("option", "--grid-spacing", "0"), "coarse spacing": ("option", "--grid-spacing", "1000"),
    "nan smoothness": ("option", "--smoothness", "nan"), "negative smoothness": ("option", "--smoothness", "-1"),
    "unknown similarity": ("option", "--similarity", "ssd"),
}
mutations = st.one_of(st.none(), st.sampled_from(sorted(MUTATIONS)))
labels = st.sampled_from([None, "small"])


def _image(spec: dict) -> sitk.Image:
    shape = spec["size"][::-1]
    generator = np.random.default_rng(spec["seed"])
    values = generator.random(shape) * 100
    if spec["content"] == "constant":
        values[...] = 7
    elif spec["content"] in ("nan", "inf") and PIXEL_TYPES[spec["pixel"]] in (np.float32, np.float64):
        values.flat[0] = np.nan if spec["content"] == "nan" else np.inf
    image = sitk.GetImageFromArray(values.astype(PIXEL_TYPES[spec["pixel"]]))
    image.SetSpacing(spec["spacing"])
    image.SetDirection([float(v) for v in DIRECTIONS[spec["direction"]]])
    return image


def _labels(kind: str, reference: sitk.Image) -> sitk.Image:
    shape = reference.GetSize()[::-1]
    values = np.zeros(shape, dtype=np.float64)
    values.flat[: max(1, values.size // 2)] = {"small": 1, "negative": -3, "huge": 5e9, "fractional": 1.5,
                                              "empty": 0}[kind]
    pixel = np.float32 if kind == "fractional" else (np.int64 if kind == "huge" else np.int16)
    image = sitk.GetImageFromArray(values.astype(pixel))
    image.CopyInformation(reference)
    return image


def _result_files(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fixed=images, moving=images, label_kind=labels, chosen=options, mutation=mutations,
       on_moving=st.booleans())
def test_register_never_fails_badly(one_torch_thread, fixed, moving, label_kind, chosen, mutation, on_moving):
    if mutation is not None:
        target, key, value = MUTATIONS[mutation]
        if target == "image":
            (moving if on_moving else fixed)[key] = value
        elif target == "labels":
            label_kind = value
        else:
            chosen[key] = value
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        fixed_image = _image(fixed)
        sitk.WriteImage(fixed_image, str(work / "fixed.nii.gz"))
        sitk.WriteImage(_image(moving), str(work / "moving.nrrd"))
        arguments = ["register", "--fixed", str(work / "fixed.nii.gz"), "--moving", str(work / "moving.nrrd"),
                     "--output-dir", str(work / "out"), "--model", "none", "--progress", "none",
                     chosen["--affine"]]
        for option in ("--refine-steps", "--grid-spacing", "--smoothness", "--similarity"):
            if chosen[option] is not None:
                arguments += [option, chosen[option]]
        if label_kind is not None:
            sitk.WriteImage(_labels(label_kind, fixed_image), str(work / "labels.nrrd"))
            arguments += ["--fixed-seg", str(work / "labels.nrrd")]
        inputs = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = main(arguments)
        message = stderr.getvalue()
        event(f"exit {int(code)}")

        assert code in ALLOWED, f"exit {code}: {message}"
        assert {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()} == inputs
        if code == ExitCode.OK:
            summary = (work / "out" / "summary.json").read_text()
            json.loads(summary, parse_constant=lambda name: (_ for _ in ()).throw(AssertionError(name)))
        else:
            lines = message.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in message, message
            assert _result_files(work / "out") == []
