from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class DjangoRedisSessionsAppConfig(AppConfig):
    name = "django_redis_sessions"
    verbose_name = "Redis sessions"

    def ready(self) -> None:
        from django_redis_sessions.checks import (
            check_metadata_middleware,
            check_settings,
        )

        checks.register(check_settings)
        checks.register(check_metadata_middleware)
