"""Test harness: real PostgreSQL and S3 servers on loopback, and ansible-playbook runs.

Used by pytest (tests/conftest.py), by `make demo` / `make sandbox-up` and by
molecule scenarios (through `python -m tests.harness.sandbox`).
"""
