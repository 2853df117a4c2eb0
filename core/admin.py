"""Admin building blocks shared by every app."""


class ReadOnlyAdminMixin:
    """For records (executions, attempts, breaker events): shown, never added, changed or
    deleted in the admin; actions call services instead (as django-q2's own admin does)."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
