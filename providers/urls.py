"""API routes of the providers app, mounted under /api/v1/."""

urlpatterns: list = []
