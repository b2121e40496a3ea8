"""The demo site of django-redis-sessions; start it with ``python example/run.py``.

A package so that the demo is importable as ``example.demo`` from the
repository root, by ``run.py`` and by ``tests/test_example.py``.
"""
