"""Harnesses shared by the test suite (`tests/`) and the reliability runs
(`reliability/`): real servers on 127.0.0.1, a `voxtrace serve`/`voxtrace worker` in a
subprocess, hostile HTTP servers, a scratch PostgreSQL schema. Not part of the package.

    helpers.py          file servers, ServeProcess/Server/WorkerProcess, suite processes
    hostile_servers.py  HTTP servers that misbehave on purpose (slow, huge, flapping)
    postgres.py         the test PostgreSQL: reachable?, scratch schemas, admin statements
"""
