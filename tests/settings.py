"""Django settings for the test suite.

``SESSION_REDIS`` is filled in by ``tests/conftest.py`` once the throwaway
server is up (or from ``REDIS_URL``).
"""

from __future__ import annotations

import os

SECRET_KEY = "django-redis-sessions-tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["testserver", "localhost"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.humanize",
    "django.contrib.messages",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "django_redis_sessions",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django_redis_sessions.middleware.SessionMetadataMiddleware",
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
            ]
        },
    }
]
LOGIN_URL = "/login/"
# The live server of the browser tests serves static files from here.
STATIC_URL = "/static/"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
ROOT_URLCONF = "tests.urls"
SESSION_ENGINE = "django_redis_sessions.backends.redis"
# A process started by a test (an ASGI server) learns its Redis from the test.
SESSION_REDIS = {
    "URL": os.environ.get("TEST_SESSION_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "PREFIX": os.environ.get("TEST_SESSION_REDIS_PREFIX", "test-sessions:"),
    "OPTIONS": {"client_name": os.environ.get("TEST_SESSION_REDIS_CLIENT_NAME")},
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
