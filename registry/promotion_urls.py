"""Routes of promotion_urls (mounted by registry.urls)."""

urlpatterns: list = []
