"""Reliability runner: fault scenarios run repeatedly, summarised in docs/reliability.md.

    .venv/bin/python -m reliability [--quick] [--sections kills,hostile,backend,disk]

Each section is one function returning markdown (see `reliability.run.SECTIONS`); the
scenarios themselves live in `reliability.scenarios`, shared with `tests/test_faults.py`.
"""
