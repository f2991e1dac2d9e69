"""How soon a registration starts: on the warm engine (``shmoareg serve``) and in a new process (issue 24, 5).

Run::

    .venv/bin/python benchmarks/warm_engine.py

For the shipped sample pair (2 mm) and, when ``../shared/data`` exists, the 1 mm pair OASIS-TRT-20 11 -> 12, it
measures the seconds from sending a ``register`` request to its first progress event: on one warm engine (started
once per pair, the request written to its stdin; target under 0.5 s) and for a cold one-shot
``python -m shmoareg register`` process (from its launch). Each request is cancelled by SIGINT once its first event
has arrived (the warm engine answers with exit code 130 and takes the next). Requests to the warm engine are sent
``--pause`` seconds after the last one's answer, as a user's next click would be: after answering, the engine
frees the request's memory (a garbage collection, about 0.2 s here) before it reads the next. Median of
``--repeats`` requests each; the engine's own start (launch to ``ready``) is reported too. Writes
``benchmarks/results/warm_engine_cpu.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import compare
from shmoareg.protocol import (FINAL_EVENTS, PROGRESS_EVENT, READY_EVENT, REQUEST_ARGUMENTS_KEY, REQUEST_COMMAND_KEY,
                               SERVE_COMMAND, ExitCode)
from shmoareg.resources import SAMPLE_PAIR

RESULTS = compare.HERE / "results" / "warm_engine_cpu.json"
WORK = compare.HERE / "out" / "warm_engine"
ENGINE = [sys.executable, "-m", "shmoareg"]
TARGET_SECONDS = 0.5


def pairs() -> dict[str, tuple[Path, Path]]:
    """The pairs measured: the sample pair, and OASIS 11 -> 12 at 1 mm when the shared data is there."""
    found = {"sample (2 mm)": (SAMPLE_PAIR["fixed"], SAMPLE_PAIR["moving"])}
    oasis = compare.REAL_DATA
    if (oasis / "11" / "t1_brain.nii.gz").is_file():
        found["oasis 11->12 (1 mm)"] = (oasis / "11" / "t1_brain.nii.gz", oasis / "12" / "t1_brain.nii.gz")
    return found


def register_words(fixed: Path, moving: Path, output: Path) -> list[str]:
    return ["--fixed", str(fixed), "--moving", str(moving), "--output-dir", str(output), "--device", "cpu"]


def next_event(process: subprocess.Popen) -> dict:
    """The process's next JSON event (other lines skipped)."""
    while True:
        line = process.stdout.readline()
        if not line:
            raise SystemExit(f"the engine ended (exit {process.wait()}) before its next event")
        try:
            return json.loads(line)
        except ValueError:
            continue


def until(process: subprocess.Popen, events: tuple[str, ...]) -> dict:
    while True:
        event = next_event(process)
        if event["event"] in events:
            return event


def send_register(engine: subprocess.Popen, words: list[str]) -> float:
    """Write a ``register`` request with the command-line ``words`` to the warm engine; returns when it was sent
    (``time.perf_counter``)."""
    sent = time.perf_counter()
    engine.stdin.write(json.dumps({REQUEST_COMMAND_KEY: "register", REQUEST_ARGUMENTS_KEY: words}) + "\n")
    engine.stdin.flush()
    return sent


def cancel(process: subprocess.Popen) -> None:
    """SIGINT, then the request's final event, which must be a cancel."""
    process.send_signal(signal.SIGINT)
    event = until(process, FINAL_EVENTS)
    if event.get("exit_code") != ExitCode.CANCELLED:
        raise SystemExit(f"a cancelled request ended with {event}")


def warm(fixed: Path, moving: Path, repeats: int, pause: float) -> dict:
    """One engine: seconds to its ready event, and per request from sending it to its first progress event."""
    launched = time.perf_counter()
    engine = subprocess.Popen([*ENGINE, SERVE_COMMAND], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              bufsize=1, env=compare.child_environment())
    try:
        until(engine, (READY_EVENT,))
        ready = time.perf_counter() - launched
        seconds = []
        for repeat in range(repeats):
            words = register_words(fixed, moving, WORK / f"warm-{repeat}")
            time.sleep(pause)
            sent = send_register(engine, words)
            until(engine, (PROGRESS_EVENT,))
            seconds.append(time.perf_counter() - sent)
            cancel(engine)
        engine.stdin.close()
        engine.wait(60)
    finally:
        engine.kill()
    return {"ready_seconds": round(ready, 3), "first_event_seconds": [round(s, 3) for s in seconds]}


def cold(fixed: Path, moving: Path, repeats: int) -> list[float]:
    """Per one-shot process: seconds from its launch to its first progress event."""
    seconds = []
    for repeat in range(repeats):
        words = register_words(fixed, moving, WORK / f"cold-{repeat}")
        launched = time.perf_counter()
        process = subprocess.Popen([*ENGINE, "register", *words, "--progress", "json"], stdout=subprocess.PIPE,
                                   text=True, env=compare.child_environment())
        try:
            until(process, (PROGRESS_EVENT,))
            seconds.append(round(time.perf_counter() - launched, 3))
            cancel(process)
            process.wait(60)
        finally:
            process.kill()
    return seconds


def table(results: dict[str, dict]) -> str:
    lines = ["| pair | warm engine: request to first event (s) | new process: launch to first event (s) | "
             "engine start to ready (s) |", "|---|---|---|---|"]
    for name, result in results.items():
        lines.append(f"| {name} | {result['warm_median']:.3f} | {result['cold_median']:.3f} | "
                     f"{result['warm']['ready_seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between warm requests (default 1)")
    args = parser.parse_args()
    results = {}
    for name, (fixed, moving) in pairs().items():
        measured = warm(fixed, moving, args.repeats, args.pause)
        cold_seconds = cold(fixed, moving, args.repeats)
        results[name] = {"fixed": str(fixed), "moving": str(moving), "warm": measured,
                         "warm_median": statistics.median(measured["first_event_seconds"]),
                         "cold_seconds": cold_seconds, "cold_median": statistics.median(cold_seconds)}
        print(f"{name}: warm {results[name]['warm_median']:.3f} s, cold {results[name]['cold_median']:.3f} s",
              flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"target_seconds": TARGET_SECONDS, "repeats": args.repeats, "pause": args.pause,
                                   "pairs": results},
                                  indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
