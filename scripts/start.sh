#!/usr/bin/env bash
# Quick start: install, prepare (migrations, admin user, signature library, default model),
# then run the web server and the django-q2 clusters in the foreground. Ctrl-C stops all.
source "$(dirname "$0")/_venv.sh"
ensure_venv ""
ensure_fast_blas
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-config.settings.local}"
.venv/bin/python manage.py bootstrap
exec .venv/bin/python manage.py serve "$@"
