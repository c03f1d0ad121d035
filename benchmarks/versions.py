"""Prints the library versions and machine facts recorded in BENCHMARKS.md."""

from bench_utils import emit, setup_tensorflow, versions

setup_tensorflow()

if __name__ == "__main__":
    emit(**versions())
