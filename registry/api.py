"""REST API of the signature registry (mounted under /api/v1/).

Reading needs an authenticated client (an API key or a staff session); writing needs the
model permission (`registry.add_signature`, `registry.add_signatureversion`,
`registry.add_alias` and `registry.change_alias`, ...). Specs are validated by the registry's
own rules (`registry.specs`), whose errors come back in the API's error shape, keyed by field.
"""

from typing import Any

from django.db import transaction
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import DjangoModelPermissions, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from core import generation
from core.api.schema import error_response
from registry import selectors
from registry.exceptions import InvalidSpec
from registry.field_types import FieldType
from registry.models import Alias, Signature, SignatureVersion
from registry.services.aliases import ANY_VERSION, alias_remove, alias_set
from registry.services.signatures import signature_create, signature_update
from registry.services.versions import signature_version_create
from registry.specs import NAME_MAX_LENGTH, NAME_PATTERN, ModuleKind

# Serializers. Requests are validated by registry.specs (one set of rules for the API, the
# admin, imports and discovery); the request serializers document their shape in the schema.


class FieldSpecSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="A Python identifier, unique within the version.")
    type = serializers.ChoiceField(choices=FieldType.choices)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    prefix = serializers.CharField(
        required=False, allow_null=True, default=None, help_text="Optional prompt prefix."
    )
    choices = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="The allowed values; required for `literal`, forbidden otherwise.",
    )


class LmDefaultsSerializer(serializers.Serializer):
    temperature = serializers.FloatField(
        required=False, min_value=generation.TEMPERATURE_MIN, max_value=generation.TEMPERATURE_MAX
    )
    max_tokens = serializers.IntegerField(
        required=False, min_value=generation.MAX_TOKENS_MIN, max_value=generation.MAX_TOKENS_CEILING
    )


class VersionSpecSerializer(serializers.Serializer):
    instructions = serializers.CharField(help_text="The task, as the model is told it.")
    input_fields = FieldSpecSerializer(many=True)
    output_fields = FieldSpecSerializer(many=True)
    module_kind = serializers.ChoiceField(
        choices=ModuleKind.choices, required=False, default=ModuleKind.PREDICT
    )
    lm_defaults = LmDefaultsSerializer(required=False)
    compiled_state = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="DSPy program state from `module.dump_state()` (demos, instructions).",
    )
    changelog = serializers.CharField(required=False, allow_blank=True, default="")


class SignatureCreateSerializer(serializers.Serializer):
    name = serializers.RegexField(NAME_PATTERN, max_length=NAME_MAX_LENGTH)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    tags = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    version = VersionSpecSerializer(
        required=False, help_text="Optional first version, created with the signature."
    )


class SignatureUpdateSerializer(serializers.Serializer):
    description = serializers.CharField(required=False, allow_blank=True)
    tags = serializers.ListField(child=serializers.CharField(), required=False)


class AliasMoveSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, help_text="The version to point at.")
    expected_version = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        help_text=(
            "Optional precondition: the version the alias points at now (null: the alias must "
            "not exist yet). When it has moved meanwhile, the answer is 409 and nothing changes."
        ),
    )


class AliasSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="version.number")
    updated_by = serializers.SerializerMethodField()

    class Meta:
        model = Alias
        fields = ["name", "version", "updated_at", "updated_by"]

    def get_updated_by(self, alias: Alias) -> str | None:
        return alias.updated_by.get_username() if alias.updated_by else None


class VersionSummarySerializer(serializers.ModelSerializer):
    author = serializers.SerializerMethodField()

    class Meta:
        model = SignatureVersion
        fields = ["number", "module_kind", "content_hash", "changelog", "author", "created_at"]

    def get_author(self, version: SignatureVersion) -> str | None:
        return version.author.get_username() if version.author else None


class VersionSerializer(VersionSummarySerializer):
    signature = serializers.CharField(source="signature.name")
    input_fields = FieldSpecSerializer(many=True)
    output_fields = FieldSpecSerializer(many=True)
    lm_defaults = LmDefaultsSerializer()
    compiled_state = serializers.JSONField(allow_null=True)
    aliases = serializers.SerializerMethodField(help_text="Aliases pointing at this version.")

    class Meta:
        model = SignatureVersion
        fields = [
            "signature",
            "number",
            "instructions",
            "input_fields",
            "output_fields",
            "module_kind",
            "lm_defaults",
            "compiled_state",
            "content_hash",
            "changelog",
            "author",
            "created_at",
            "aliases",
        ]

    def get_aliases(self, version: SignatureVersion) -> list[str]:
        return sorted(alias.name for alias in version.aliases.all())


class VersionCreatedSerializer(VersionSerializer):
    created = serializers.BooleanField(
        help_text="False when the spec was identical to the latest version: nothing was added."
    )

    class Meta(VersionSerializer.Meta):
        fields = [*VersionSerializer.Meta.fields, "created"]


class SignatureSerializer(serializers.ModelSerializer):
    latest_version = serializers.SerializerMethodField()
    aliases = serializers.SerializerMethodField(help_text="Alias name to version number.")

    class Meta:
        model = Signature
        fields = [
            "name",
            "description",
            "tags",
            "latest_version",
            "aliases",
            "created_at",
            "updated_at",
        ]

    def get_latest_version(self, signature: Signature) -> int | None:
        versions = signature.versions.all()  # prefetched, newest first
        return versions[0].number if versions else None

    def get_aliases(self, signature: Signature) -> dict[str, int]:
        return {alias.name: alias.version.number for alias in signature.aliases.all()}


class SignatureDetailSerializer(SignatureSerializer):
    versions = VersionSummarySerializer(many=True, help_text="Newest first.")
    alias_details = AliasSerializer(many=True, source="aliases")

    class Meta(SignatureSerializer.Meta):
        fields = [*SignatureSerializer.Meta.fields, "versions", "alias_details"]


class AliasPermissions(DjangoModelPermissions):
    # PUT creates the alias when it does not exist yet, so it needs both permissions.
    perms_map = DjangoModelPermissions.perms_map | {
        "PUT": ["%(app_label)s.add_%(model_name)s", "%(app_label)s.change_%(model_name)s"],
    }


class RegistryApi(generics.GenericAPIView):
    permission_classes = [IsAuthenticated, DjangoModelPermissions]
    filter_backends: list = []

    def signature(self) -> Signature:
        return selectors.signature_get(name=self.kwargs["name"])


def _version_with_aliases(version: SignatureVersion) -> SignatureVersion:
    return (
        SignatureVersion.objects.select_related("signature", "author")
        .prefetch_related("aliases")
        .get(pk=version.pk)
    )


class SignatureListApi(RegistryApi):
    queryset = Signature.objects.all()
    serializer_class = SignatureSerializer

    @extend_schema(
        operation_id="registry_signatures_list",
        parameters=[
            OpenApiParameter("search", str, description="Matches name, description or tag."),
            OpenApiParameter("tag", str, description="Signatures with this tag."),
            OpenApiParameter(
                "module_kind",
                str,
                enum=ModuleKind.values,
                description="Signatures with a version of this module kind.",
            ),
            OpenApiParameter("alias", str, description="Signatures that have this alias."),
        ],
    )
    def get(self, request: Request) -> Response:
        """List and search signatures."""
        queryset = selectors.signature_list(
            search=_query_text(request, "search"),
            tag=_query_text(request, "tag"),
            module_kind=_query_text(request, "module_kind"),
            alias=_query_text(request, "alias"),
        )
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(SignatureSerializer(page, many=True).data)

    @extend_schema(
        operation_id="registry_signatures_create",
        request=SignatureCreateSerializer,
        responses={
            201: SignatureDetailSerializer,
            409: error_response("A signature of this name exists already."),
        },
        examples=[
            OpenApiExample(
                "A classifier with its first version",
                request_only=True,
                value={
                    "name": "ticket_priority",
                    "description": "Priority of a support ticket.",
                    "tags": ["support"],
                    "version": {
                        "instructions": "Rate how urgent the ticket is.",
                        "input_fields": [{"name": "ticket", "type": "str"}],
                        "output_fields": [
                            {
                                "name": "priority",
                                "type": "literal",
                                "choices": ["low", "normal", "urgent"],
                            }
                        ],
                        "module_kind": "Predict",
                        "lm_defaults": {"temperature": 0.0},
                    },
                },
            )
        ],
    )
    def post(self, request: Request) -> Response:
        """Create a signature, optionally with its first version."""
        data = _object(request.data)
        version_spec = data.get("version")
        if version_spec is not None and not request.user.has_perm("registry.add_signatureversion"):
            raise PermissionDenied("Adding a version needs the add_signatureversion permission.")
        with transaction.atomic():
            signature = signature_create(
                name=data.get("name"),
                description=data.get("description", ""),
                tags=data.get("tags"),
                author=request.user,
            )
            if version_spec is not None:
                version_spec = _object(version_spec, field="version")
                try:
                    signature_version_create(
                        signature=signature,
                        spec=version_spec,
                        changelog=_text(version_spec.get("changelog"), field="changelog"),
                        author=request.user,
                    )
                except InvalidSpec as exc:
                    raise InvalidSpec({"version": exc.errors}) from exc
        return Response(_signature_detail(signature.name), status=status.HTTP_201_CREATED)


def _signature_detail(name: str) -> dict[str, Any]:
    return SignatureDetailSerializer(selectors.signature_detail(name=name)).data


def _object(data: Any, *, field: str | None = None) -> dict[str, Any]:
    if not isinstance(data, dict):
        message = "Expected a JSON object."
        raise ValidationError({field: [message]} if field else {"non_field_errors": [message]})
    return data


def _query_text(request: Request, key: str) -> str | None:
    value = request.query_params.get(key)
    if value and "\x00" in value:
        # PostgreSQL refuses NUL characters in text, so the query would fail.
        raise ValidationError({key: ["Null characters are not allowed."]})
    return value


def _text(value: Any, *, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError({field: ["Expected a string."]})
    return value


class SignatureDetailApi(RegistryApi):
    queryset = Signature.objects.all()
    serializer_class = SignatureDetailSerializer

    @extend_schema(
        operation_id="registry_signatures_retrieve",
        responses={200: SignatureDetailSerializer},
    )
    def get(self, request: Request, name: str) -> Response:
        """A signature with its versions (newest first) and aliases."""
        return Response(_signature_detail(name))

    @extend_schema(
        operation_id="registry_signatures_partial_update",
        request=SignatureUpdateSerializer,
        responses={200: SignatureDetailSerializer},
    )
    def patch(self, request: Request, name: str) -> Response:
        """Change a signature's description or tags (its behaviour changes by versions)."""
        data = _object(request.data)
        unknown = sorted(set(data) - {"description", "tags"})
        if unknown:
            raise ValidationError(
                {
                    key: ["Not editable here; behaviour changes by adding a version."]
                    for key in unknown
                }
            )
        signature_update(
            signature=self.signature(),
            description=data.get("description"),
            tags=data.get("tags"),
        )
        return Response(_signature_detail(name))


class VersionListApi(RegistryApi):
    queryset = SignatureVersion.objects.all()
    serializer_class = VersionSerializer

    @extend_schema(
        operation_id="registry_versions_list",
        responses={200: VersionSerializer(many=True)},
    )
    def get(self, request: Request, name: str) -> Response:
        """Every version of a signature, newest first."""
        queryset = (
            SignatureVersion.objects.filter(signature=self.signature())
            .select_related("signature", "author")
            .prefetch_related("aliases")
            .order_by("-number")
        )
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(VersionSerializer(page, many=True).data)

    @extend_schema(
        operation_id="registry_versions_create",
        request=VersionSpecSerializer,
        responses={
            201: VersionCreatedSerializer,
            200: OpenApiResponse(
                VersionCreatedSerializer,
                description="Identical to the latest version: nothing created (`created` false).",
            ),
            404: error_response("Unknown signature."),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        """Add a version. A spec identical to the latest version creates nothing."""
        data = _object(request.data)
        result = signature_version_create(
            signature=self.signature(),
            spec=data,
            changelog=_text(data.get("changelog"), field="changelog"),
            author=request.user,
        )
        body = VersionSerializer(_version_with_aliases(result.version)).data
        body["created"] = result.created
        return Response(
            body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        )


class VersionDetailApi(RegistryApi):
    queryset = SignatureVersion.objects.all()
    serializer_class = VersionSerializer

    @extend_schema(operation_id="registry_versions_retrieve", responses={200: VersionSerializer})
    def get(self, request: Request, name: str, number: int) -> Response:
        """One version: its fields, instructions, module kind, state and hash."""
        version = selectors.signature_version_get(signature=self.signature(), number=number)
        return Response(VersionSerializer(_version_with_aliases(version)).data)


class VersionResolveApi(RegistryApi):
    queryset = SignatureVersion.objects.all()
    serializer_class = VersionSerializer

    @extend_schema(
        operation_id="registry_versions_resolve",
        parameters=[
            OpenApiParameter(
                "ref",
                str,
                description=(
                    "A version number, an alias, or `latest`. Omitted: the `production` alias "
                    "when set, else the latest version (what an execution without a version runs)."
                ),
            )
        ],
        responses={200: VersionSerializer},
    )
    def get(self, request: Request, name: str) -> Response:
        """The version a reference designates."""
        version = selectors.signature_version_resolve(
            name=name, ref=request.query_params.get("ref") or None
        )
        return Response(VersionSerializer(_version_with_aliases(version)).data)


class AliasListApi(RegistryApi):
    queryset = Alias.objects.all()
    serializer_class = AliasSerializer
    pagination_class = None

    @extend_schema(
        operation_id="registry_aliases_list",
        responses={200: AliasSerializer(many=True)},
    )
    def get(self, request: Request, name: str) -> Response:
        """The aliases of a signature. `latest` is implicit and never listed."""
        aliases = Alias.objects.filter(signature=self.signature()).select_related(
            "version", "updated_by"
        )
        return Response(AliasSerializer(aliases, many=True).data)


class AliasDetailApi(RegistryApi):
    queryset = Alias.objects.all()
    serializer_class = AliasSerializer
    permission_classes = [IsAuthenticated, AliasPermissions]

    @extend_schema(operation_id="registry_aliases_retrieve", responses={200: AliasSerializer})
    def get(self, request: Request, name: str, alias: str) -> Response:
        """One alias and the version it points at."""
        found = selectors.alias_get(signature=self.signature(), name=alias)
        return Response(AliasSerializer(found).data)

    @extend_schema(
        operation_id="registry_aliases_update",
        request=AliasMoveSerializer,
        responses={
            200: AliasSerializer,
            404: error_response("Unknown signature or version."),
            409: error_response("The alias has moved since `expected_version`."),
        },
    )
    def put(self, request: Request, name: str, alias: str) -> Response:
        """Set or move an alias to a version (row-locked; optionally compare-and-set)."""
        serializer = AliasMoveSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        signature = self.signature()
        version = selectors.signature_version_get(
            signature=signature, number=serializer.validated_data["version"]
        )
        expected = serializer.validated_data.get("expected_version", ANY_VERSION)
        result = alias_set(
            signature=signature,
            name=alias,
            version=version,
            user=request.user,
            expected_version=expected,
        )
        return Response(AliasSerializer(result.alias).data)

    @extend_schema(operation_id="registry_aliases_destroy", responses={204: None})
    def delete(self, request: Request, name: str, alias: str) -> Response:
        """Remove an alias."""
        alias_remove(signature=self.signature(), name=alias, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
