"""Permissions shared by the API's views."""

from rest_framework.permissions import DjangoModelPermissions


class ModelPermissionsWithView(DjangoModelPermissions):
    """DRF's model permissions, with reading too needing the model's `view` permission.

    For configuration that is not every client's business (provider endpoints and key
    variables): API keys hold no model permission, so they may not read it.
    """

    perms_map = DjangoModelPermissions.perms_map | {
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }
