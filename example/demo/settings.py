"""Settings of the demo project. Start it with ``python example/run.py``.

``run.py`` starts a throwaway Redis and passes its URL in ``SESSION_REDIS_URL``;
set that variable yourself to use another Redis. Only the sessions live in
Redis: the demo user lives in ``example/db.sqlite3``.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

EXAMPLE_DIR = Path(__file__).resolve().parent.parent


def _redis_url() -> str:
    try:
        return os.environ["SESSION_REDIS_URL"]
    except KeyError:
        raise ImproperlyConfigured(
            "SESSION_REDIS_URL is not set: start the demo with "
            "`python example/run.py`, which starts a Redis server and sets it, "
            "or set it to the URL of a Redis server you run yourself."
        ) from None


# The point of the demo: sessions in Redis, under their own prefix. The "Your
# sessions" page (/account/sessions/) shows each login's IP and browser, which
# SessionMetadataMiddleware hands over and USER_INDEX_METADATA keeps.
SESSION_ENGINE = "django_redis_sessions.backends.redis"
SESSION_REDIS = {
    "URL": _redis_url(),
    "PREFIX": "demo-sessions:",
    "USER_INDEX_METADATA": ("ip", "user_agent"),
}
# Short, so the expiry countdown on /sessions/ visibly moves.
SESSION_COOKIE_AGE = 30 * 60

SECRET_KEY = "demo-only-this-is-not-a-secret"  # never deploy the demo
DEBUG = True
ALLOWED_HOSTS: list[str] = []  # with DEBUG: localhost, 127.0.0.1 and [::1]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Translated relative times on the "Your sessions" page.
    "django.contrib.humanize",
    # Before django_redis_sessions: its templates override the package's, so
    # the "Your sessions" page has the demo's layout.
    "example.demo",
    "django_redis_sessions",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django_redis_sessions.middleware.SessionMetadataMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
# Messages in a cookie, not in the session: "you ended your own session" must
# survive the session it talks about.
MESSAGE_STORAGE = "django.contrib.messages.storage.cookie.CookieStorage"

ROOT_URLCONF = "example.demo.urls"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "index"
LOGOUT_REDIRECT_URL = "index"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": EXAMPLE_DIR / "db.sqlite3",
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
