"""Routes of optimization_urls (mounted by evaluations.urls)."""

urlpatterns: list = []
