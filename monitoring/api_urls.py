"""Monitoring's part of the versioned API (`/api/v1/`): reads for clients and operators."""

from django.urls import path  # noqa: F401 (each monitoring API adds its route here)

urlpatterns: list = []
