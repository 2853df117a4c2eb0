"""Routes of evaluation_urls (mounted by evaluations.urls)."""

urlpatterns: list = []
