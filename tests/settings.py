"""Django settings for the test suite.

``SESSION_REDIS`` is filled in by ``tests/conftest.py`` once the throwaway
server is up (or from ``REDIS_URL``).
"""

from __future__ import annotations

SECRET_KEY = "django-redis-sessions-tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["testserver", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django_redis_sessions",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
ROOT_URLCONF = "tests.urls"
SESSION_ENGINE = "django_redis_sessions.backends.redis"
SESSION_REDIS = {"URL": "redis://127.0.0.1:6379/0", "PREFIX": "test-sessions:"}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
