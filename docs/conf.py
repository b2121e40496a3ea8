"""Sphinx configuration: ``sphinx-build -W -b html docs docs/_build/html``."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Read from the source, not imported: building the docs needs no Django.
_init = (ROOT / "django_redis_sessions" / "__init__.py").read_text(encoding="utf-8")
_version = re.search(r'^__version__ = "([^"]+)"', _init, re.MULTILINE)

project = "django-redis-session-engine"
author = "the django-redis-session-engine contributors"
copyright = author
release = version = _version[1] if _version else "unknown"

exclude_patterns = ["_build"]
# The pages show code in double backquotes; a single backquote pair is a
# mistake to see as literal text, not a reference for Sphinx to guess at.
default_role = "literal"
highlight_language = "python"

html_theme = "furo"
html_title = f"{project} {release}"
html_show_sourcelink = False
