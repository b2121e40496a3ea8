"""The demo project, also its only app: ``APP_DIRS`` finds its templates."""
