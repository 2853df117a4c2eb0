"""The monitoring app's applied first migration, as it is."""

from importlib import import_module

Migration = import_module("monitoring.migrations.0001_service_processes").Migration
