"""Where a ``shmoareg register`` run spends its time: per stage, process start and exit, peak RSS.

Run (needs ``../shared/data``; the real-brain pairs of ``compare.py``, 1 mm)::

    .venv/bin/python benchmarks/profile_register.py --label after
    .venv/bin/python benchmarks/profile_register.py --pairs oasis-11-12 --repeats 1 -- --similarity mind

Each run is one engine process (``--progress json``, the Slicer module's protocol) started by a small stdlib-only
launcher that time-stamps every JSON line as it arrives and reads the child's peak RSS from ``os.wait4``.
**start** is the launch to the first progress event (interpreter, imports, argument checks), the stages are
``summary.json``'s ``seconds``, **outside stages** is what ``register`` spent between them (the summary, publishing
the files), and **exit** is the ``done`` event to the process's exit. Printed: the median of each over
``--repeats`` runs of every pair, then over the pairs; written to ``benchmarks/results/profile_<label>.json``.
Options after ``--`` go to ``register`` unchanged. ``--warm`` measures the Slicer module's path instead: one warm
engine per pair (``shmoareg serve``, started and made ready before the first request, as the module keeps it), the
images given as the module gives them (uncompressed NRRD, written once beforehand), each run a request written to
its stdin; **start** is then the request to its first progress event, **exit** is 0 (the
engine stays), and **peak MB** the engine's peak RSS so far (``VmHWM``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import SimpleITK as sitk

import compare
import warm_engine
from shmoareg.protocol import FINAL_EVENTS, READY_EVENT, SERVE_COMMAND

RESULTS = compare.HERE / "results"
WORK = compare.HERE / "out" / "profile"
DEFAULT_PAIRS = ("oasis-11-12", "oasis-12-13", "oasis-13-14", "oasis-14-15")
STAGES = ("load", "affine", "preprocess", "predict", "register", "write")
COLUMNS = ("start", *STAGES, "outside stages", "exit", "wall", "peak MB")
# The launcher: the engine's stdout read line by line, each JSON line stamped with its seconds since the launch.
LAUNCHER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE, text=True)
events = []
for line in child.stdout:
    try:
        record = json.loads(line)
    except ValueError:
        continue
    events.append([time.perf_counter() - start, record.get("event"), record.get("stage")])
_, status, usage = os.wait4(child.pid, 0)
json.dump({"seconds": time.perf_counter() - start, "peak_memory_mb": usage.ru_maxrss / 1024,
           "returncode": os.waitstatus_to_exitcode(status), "events": events}, open(sys.argv[1], "w"))
"""


def profile_run(pair: compare.Pair, output: Path, engine_arguments: list[str]) -> dict:
    """One timed ``register`` of ``pair`` into ``output``: seconds per column of ``COLUMNS``."""
    shutil.rmtree(output, ignore_errors=True)  # a fresh folder, as a user's: replacing large files costs seconds here
    output.mkdir(parents=True)
    timing = output.parent / f"{output.name}-timing.json"
    command = [sys.executable, "-m", "shmoareg", "register", "--fixed", str(pair.fixed), "--moving",
               str(pair.moving), "--output-dir", str(output), "--device", "cpu", "--progress", "json",
               *engine_arguments]
    subprocess.run([sys.executable, "-S", "-c", LAUNCHER, str(timing), *command], env=compare.child_environment(),
                   check=True)
    measured = json.loads(timing.read_text())
    if measured["returncode"] != 0:
        raise SystemExit(f"register failed on {pair.name} (exit {measured['returncode']}); see its output above")
    events = measured["events"]
    first = events[0][0]
    done = next(t for t, event, _ in events if event == "done")
    return _columns(output, first, done, measured["seconds"], measured["peak_memory_mb"])


def _columns(output: Path, first: float, done: float, wall: float, peak_mb: float) -> dict:
    """The columns of one run from its event times (seconds since the launch or request) and ``summary.json``."""
    seconds = json.loads((output / "summary.json").read_text())["seconds"]
    run = {"start": first, **{stage: seconds.get(stage, 0.0) for stage in STAGES},
           "outside stages": (done - first) - sum(seconds.get(stage, 0.0) for stage in STAGES),
           "exit": wall - done, "wall": wall, "peak MB": peak_mb}
    return {name: round(value, 3) for name, value in run.items()}


def profile_warm_runs(pair: compare.Pair, outputs: list[Path], engine_arguments: list[str]) -> list[dict]:
    """Timed registrations of ``pair`` into each of ``outputs`` on one warm engine, as the Slicer module runs them."""
    fixed, moving = (_as_slicer_writes(image, outputs[0].parent / f"{role}.nrrd")
                     for role, image in (("fixed", pair.fixed), ("moving", pair.moving)))
    engine = subprocess.Popen([*warm_engine.ENGINE, SERVE_COMMAND], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, bufsize=1, env=compare.child_environment())
    runs = []
    try:
        warm_engine.until(engine, (READY_EVENT,))
        for output in outputs:
            shutil.rmtree(output, ignore_errors=True)
            output.mkdir(parents=True)
            words = [*warm_engine.register_words(fixed, moving, output), *engine_arguments]
            sent = warm_engine.send_register(engine, words)
            first = None
            while (event := warm_engine.next_event(engine))["event"] not in FINAL_EVENTS:
                first = first if first is not None else time.perf_counter() - sent
            done = time.perf_counter() - sent
            if event["event"] != "done":
                raise SystemExit(f"register failed on {pair.name} in the warm engine: {event}")
            runs.append(_columns(output, first, done, done, _peak_mb(engine.pid)))
            time.sleep(1.0)  # a user's next click: the engine frees the last request's memory meanwhile
        engine.stdin.close()
        engine.wait(60)
    finally:
        engine.kill()
    return runs


def _as_slicer_writes(image: Path, path: Path) -> Path:
    """``image`` written to ``path`` as the Slicer module writes a volume for the engine: NRRD, uncompressed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.ReadImage(str(image)), str(path), False)
    return path


def _peak_mb(pid: int) -> float:
    """A live process's peak resident memory (``VmHWM``) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def medians(runs: list[dict]) -> dict:
    """The median of every column over ``runs``."""
    return {column: round(statistics.median(run[column] for run in runs), 3) for column in COLUMNS}


def table(rows: dict[str, dict]) -> str:
    """A Markdown table: one row per pair (and the median over them), one column per entry of ``COLUMNS``."""
    lines = ["| pair | " + " | ".join(COLUMNS) + " |", "| --- |" + " ---: |" * len(COLUMNS)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.0f}" if c == "peak MB" else f"{row[c]:.2f}"
                                                  for c in COLUMNS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", nargs="+", default=list(DEFAULT_PAIRS), help="real-brain pair names")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default="latest", help="results go to benchmarks/results/profile_<label>.json")
    parser.add_argument("--warm", action="store_true", help="on one warm engine per pair (the Slicer module's path)")
    parser.add_argument("engine_arguments", nargs="*", help="options for register, after --")
    args = parser.parse_args()
    pairs, missing = compare.real_pairs()
    if missing:
        raise SystemExit(missing)
    chosen = [pair for pair in pairs if pair.name in args.pairs]
    outputs = {pair.name: [WORK / pair.name / f"run{repeat}" for repeat in range(args.repeats)] for pair in chosen}
    if args.warm:
        runs = {pair.name: profile_warm_runs(pair, outputs[pair.name], args.engine_arguments) for pair in chosen}
    else:
        runs = {pair.name: [profile_run(pair, output, args.engine_arguments) for output in outputs[pair.name]]
                for pair in chosen}
    rows = {name: medians(pair_runs) for name, pair_runs in runs.items()}
    rows["median over pairs"] = {column: round(statistics.median(row[column] for row in rows.values()), 3)
                                 for column in COLUMNS}
    print(table(rows))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"profile_{args.label}.json").write_text(json.dumps(
        {"engine_arguments": args.engine_arguments, "repeats": args.repeats, "warm_engine": args.warm,
         "machine": compare.machine(), "medians": rows, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
