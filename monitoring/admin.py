"""The monitoring app's part of the admin: the pages the modules below register. The console
(the dashboard on the index, the usage page) is the admin site itself (`monitoring.sites`)."""

from monitoring import (
    provider_health_admin,  # noqa: F401 (the provider pages with their health)
    q2_admin,  # noqa: F401 (django-q2's task pages with the executions' status)
    resources_admin,  # noqa: F401 (registers the resources page)
)
