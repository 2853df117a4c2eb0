"""Routes of dataset_urls (mounted by registry.urls)."""

urlpatterns: list = []
