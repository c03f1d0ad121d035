"""Times a benchmark script on an earlier commit and on the working tree, side by side.

    python benchmarks/commit_compare.py --commit HEAD --rounds 3 -- train_step.py --steps 10
    python benchmarks/commit_compare.py --commit HEAD -- layer_speed.py --case ds_stage4 --rounds 3

The earlier commit is checked out into a temporary git worktree; each round runs the script
there, then in this checkout (each run its own process, so neither inherits the other's
traced graphs), and the records each prints (`bench_utils.emit`) are paired by their
non-timing fields. The report gives, per record and timing field, the median over the rounds
of each side and their ratio (working tree / earlier commit; below 1 is faster now).
Use it to check that a change did not make an existing benchmark slower.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

from bench_utils import RECORD_PREFIX, REPO_ROOT

TIMING_MARKS = ("seconds", "_ms", "per_second")  # a numeric field naming one of these is a timing


def is_timing(field, value):
    return isinstance(value, (int, float)) and (any(mark in field for mark in TIMING_MARKS) or field.endswith("_s"))


def run_records(tree, script_args):
    """The records `benchmarks/<script>` prints when run from `tree`."""
    command = [sys.executable, str(tree / "benchmarks" / script_args[0]), *script_args[1:]]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tree)
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed in {tree}: {result.stderr.strip().splitlines()[-1:]}")
    return [json.loads(line[len(RECORD_PREFIX):]) for line in result.stdout.splitlines()
            if line.startswith(RECORD_PREFIX)]


def split_record(record):
    """(key of the non-timing fields, {timing field: value}); lists of timings are left out of both."""
    timings = {k: v for k, v in record.items() if is_timing(k, v)}
    described = {k: v for k, v in record.items()
                 if k not in timings and not (isinstance(v, list) and any(mark in k for mark in TIMING_MARKS))}
    key = json.dumps(described, sort_keys=True)
    return key, timings


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", default="HEAD", help="The earlier commit (default: HEAD, the last commit).")
    parser.add_argument("--rounds", type=int, default=3, help="Runs of each side, interleaved.")
    parser.add_argument("script", nargs=argparse.REMAINDER, help="-- SCRIPT.py [its arguments]")
    args = parser.parse_args()
    script_args = [arg for arg in args.script if arg != "--"]
    if not script_args:
        parser.error("name the benchmark script after --")
    samples = {}  # (side, key, field) -> [values]
    with tempfile.TemporaryDirectory() as folder:
        earlier = REPO_ROOT.__class__(folder) / "earlier"
        subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(earlier), args.commit],
                       check=True, capture_output=True)
        try:
            for round_index in range(args.rounds):
                for side, tree in (("earlier", earlier), ("now", REPO_ROOT)):
                    print(f"round {round_index + 1}/{args.rounds}: {side}", file=sys.stderr, flush=True)
                    for record in run_records(tree, script_args):
                        key, timings = split_record(record)
                        for field, value in timings.items():
                            samples.setdefault((side, key, field), []).append(value)
        finally:
            subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(earlier)],
                           capture_output=True)
    print(f"{' '.join(script_args)}: median of {args.rounds} interleaved runs, {args.commit} vs working tree")
    for (side, key, field), earlier_values in sorted(samples.items()):
        if side != "earlier" or ("now", key, field) not in samples:
            continue
        before, after = statistics.median(earlier_values), statistics.median(samples[("now", key, field)])
        print(f"  {key} {field}: {before:.4g} -> {after:.4g} (ratio {after / before:.3f})")


if __name__ == "__main__":
    main()
