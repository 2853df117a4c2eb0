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
from core.api.schema import JSONObjectField, error_response
from registry import selectors
from registry.exceptions import InvalidSpec
from registry.field_types import FieldType
from registry.models import Alias, Signature, SignatureVersion
from registry.services.aliases import ANY_VERSION, alias_remove, alias_set
from registry.services.signatures import signature_create, signature_update
from registry.services.versions import signature_version_create
from registry.specs import (
    ALIAS_MAX_LENGTH,
    CHOICE_MAX_LENGTH,
    DESCRIPTION_MAX_LENGTH,
    FIELD_NAME_MAX_LENGTH,
    INSTRUCTIONS_MAX_LENGTH,
    MAX_CHOICES,
    MAX_FIELDS,
    MAX_TAGS,
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    PREFIX_MAX_LENGTH,
    TAG_MAX_LENGTH,
    ModuleKind,
)

# What `registry.specs` accepts as a field name, as far as a pattern can say it: an ASCII
# identifier without a leading underscore (keywords and DSPy's reserved names are refused too).
FIELD_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"

# Serializers. Requests are validated by registry.specs (one set of rules for the API, the
# admin, imports and discovery); the request serializers document their shape in the schema,
# with the limits registry.specs enforces.


class FieldSpecSerializer(serializers.Serializer):
    """One input or output field of a version. Unknown keys are refused."""

    name = serializers.RegexField(
        FIELD_NAME_PATTERN,
        max_length=FIELD_NAME_MAX_LENGTH,
        help_text=(
            "A Python identifier, unique within the version (inputs and outputs together); not "
            "a keyword and not a name DSPy reserves (`instructions`, `config`, `reasoning`, ...)."
        ),
    )
    type = serializers.ChoiceField(choices=FieldType.choices)
    description = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=DESCRIPTION_MAX_LENGTH
    )
    prefix = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        default=None,
        max_length=PREFIX_MAX_LENGTH,
        help_text="Optional prompt prefix; null: DSPy derives it from the name.",
    )
    choices = serializers.ListField(
        child=serializers.CharField(max_length=CHOICE_MAX_LENGTH),
        required=False,
        min_length=1,
        max_length=MAX_CHOICES,
        help_text="The allowed values, distinct; required for `literal`, forbidden otherwise.",
    )


class LmDefaultsSerializer(serializers.Serializer):
    """The version's generation defaults; an execution's `config` overrides them."""

    temperature = serializers.FloatField(
        required=False, min_value=generation.TEMPERATURE_MIN, max_value=generation.TEMPERATURE_MAX
    )
    max_tokens = serializers.IntegerField(
        required=False, min_value=generation.MAX_TOKENS_MIN, max_value=generation.MAX_TOKENS_CEILING
    )


class VersionSpecSerializer(serializers.Serializer):
    """A version's spec: what defines its behaviour, and a changelog."""

    instructions = serializers.CharField(
        max_length=INSTRUCTIONS_MAX_LENGTH, help_text="The task, as the model is told it."
    )
    input_fields = serializers.ListField(
        child=FieldSpecSerializer(), min_length=1, max_length=MAX_FIELDS
    )
    output_fields = serializers.ListField(
        child=FieldSpecSerializer(), min_length=1, max_length=MAX_FIELDS
    )
    module_kind = serializers.ChoiceField(
        choices=ModuleKind.choices, required=False, default=ModuleKind.PREDICT
    )
    lm_defaults = LmDefaultsSerializer(required=False, allow_null=True)
    compiled_state = JSONObjectField(
        required=False,
        allow_null=True,
        help_text="DSPy program state from `module.dump_state()` (demos, instructions).",
    )
    changelog = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, default="", help_text="What changed."
    )


def _tags_field(**kwargs: Any) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=TAG_MAX_LENGTH),
        max_length=MAX_TAGS,
        help_text="Tags; stored trimmed, lowercase, distinct and sorted.",
        **kwargs,
    )


class SignatureCreateSerializer(serializers.Serializer):
    name = serializers.RegexField(
        NAME_PATTERN,
        max_length=NAME_MAX_LENGTH,
        help_text="Lowercase letters, digits and underscores, from a letter; cannot change.",
    )
    description = serializers.CharField(required=False, allow_blank=True, default="")
    tags = _tags_field(required=False, allow_null=True, default=list)
    version = VersionSpecSerializer(
        required=False,
        allow_null=True,
        help_text="Optional first version, created with the signature.",
    )


class SignatureUpdateSerializer(serializers.Serializer):
    """Only the description and the tags; any other key is refused."""

    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    tags = _tags_field(required=False, allow_null=True)


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
    compiled_state = JSONObjectField(allow_null=True)
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
    tags = serializers.ListField(
        child=serializers.CharField(), help_text="Lowercase tags, distinct and sorted."
    )
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


_NAME_PARAMETER = OpenApiParameter(
    "name",
    {"type": "string", "pattern": NAME_PATTERN.pattern, "maxLength": NAME_MAX_LENGTH},
    OpenApiParameter.PATH,
    description="The signature's name.",
    examples=[OpenApiExample("qa", value="qa")],
)
_NUMBER_PARAMETER = OpenApiParameter(
    "number",
    {"type": "integer", "minimum": 1},
    OpenApiParameter.PATH,
    description="The version number (1, 2, 3 ...).",
    examples=[OpenApiExample("1", value=1)],
)
_ALIAS_PARAMETER = OpenApiParameter(
    "alias",
    {"type": "string", "pattern": NAME_PATTERN.pattern, "maxLength": ALIAS_MAX_LENGTH},
    OpenApiParameter.PATH,
    description="The alias name (not `latest`, which is implicit).",
    examples=[OpenApiExample("production", value="production")],
)
_UNKNOWN_SIGNATURE = error_response("Unknown signature.")

_QA_VERSION_SPEC = {
    "instructions": "Answer the question in a few words.",
    "input_fields": [{"name": "question", "type": "str", "description": "The question."}],
    "output_fields": [{"name": "answer", "type": "str", "description": "A short answer."}],
    "module_kind": "ChainOfThought",
    "lm_defaults": {"temperature": 0.2, "max_tokens": 128},
    "changelog": "Reason step by step before answering.",
}
_SIGNATURE_DETAIL = {
    "name": "ticket_priority",
    "description": "Priority of a support ticket.",
    "tags": ["support"],
    "latest_version": 1,
    "aliases": {"production": 1},
    "created_at": "2026-01-05T10:00:00.000000Z",
    "updated_at": "2026-01-05T10:05:00.000000Z",
    "versions": [
        {
            "number": 1,
            "module_kind": "Predict",
            "content_hash": "9b1f0c6e4d2a8f7e3c5b1a9d8e7f6c5b4a3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f",
            "changelog": "",
            "author": "operator",
            "created_at": "2026-01-05T10:00:00.000000Z",
        }
    ],
    "alias_details": [
        {
            "name": "production",
            "version": 1,
            "updated_at": "2026-01-05T10:05:00.000000Z",
            "updated_by": "operator",
        }
    ],
}


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
        summary="List signatures",
        responses={200: SignatureSerializer(many=True)},
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
            search=request.query_params.get("search"),
            tag=request.query_params.get("tag"),
            module_kind=request.query_params.get("module_kind"),
            alias=request.query_params.get("alias"),
        )
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(SignatureSerializer(page, many=True).data)

    @extend_schema(
        operation_id="registry_signatures_create",
        summary="Create a signature",
        request=SignatureCreateSerializer,
        responses={
            201: SignatureDetailSerializer,
            400: error_response("The name, the tags or the version's spec are invalid."),
            403: error_response(
                "Needs `registry.add_signature` (and `registry.add_signatureversion` with a "
                "version); an API key may only read the registry."
            ),
            409: error_response("A signature of this name exists already."),
        },
        examples=[
            OpenApiExample(
                "Created",
                response_only=True,
                status_codes=["201"],
                value=_SIGNATURE_DETAIL,
            ),
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
            ),
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
        summary="Get a signature",
        parameters=[_NAME_PARAMETER],
        responses={200: SignatureDetailSerializer, 404: _UNKNOWN_SIGNATURE},
        examples=[OpenApiExample("A signature", response_only=True, value=_SIGNATURE_DETAIL)],
    )
    def get(self, request: Request, name: str) -> Response:
        """A signature with its versions (newest first) and aliases."""
        return Response(_signature_detail(name))

    @extend_schema(
        operation_id="registry_signatures_partial_update",
        summary="Change a signature's description or tags",
        parameters=[_NAME_PARAMETER],
        request=SignatureUpdateSerializer,
        responses={200: SignatureDetailSerializer, 404: _UNKNOWN_SIGNATURE},
        examples=[
            OpenApiExample(
                "New description and tags",
                request_only=True,
                value={"description": "Answers general questions.", "tags": ["demo", "qa"]},
            )
        ],
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
        summary="List a signature's versions",
        parameters=[_NAME_PARAMETER],
        responses={200: VersionSerializer(many=True), 404: _UNKNOWN_SIGNATURE},
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
        summary="Add a version",
        parameters=[_NAME_PARAMETER],
        request=VersionSpecSerializer,
        responses={
            201: OpenApiResponse(VersionCreatedSerializer, description="A new version."),
            200: OpenApiResponse(
                VersionCreatedSerializer,
                description="Identical to the latest version: nothing created (`created` false).",
            ),
            400: error_response("The spec is invalid (each problem keyed by its field)."),
            403: error_response(
                "Needs `registry.add_signatureversion`; an API key may only read the registry."
            ),
            404: _UNKNOWN_SIGNATURE,
        },
        examples=[
            OpenApiExample("A chain-of-thought version", request_only=True, value=_QA_VERSION_SPEC)
        ],
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

    @extend_schema(
        operation_id="registry_versions_retrieve",
        summary="Get a version",
        parameters=[_NAME_PARAMETER, _NUMBER_PARAMETER],
        responses={200: VersionSerializer, 404: error_response("Unknown signature or version.")},
    )
    def get(self, request: Request, name: str, number: int) -> Response:
        """One version: its fields, instructions, module kind, state and hash."""
        version = selectors.signature_version_get(signature=self.signature(), number=number)
        return Response(VersionSerializer(_version_with_aliases(version)).data)


class VersionResolveApi(RegistryApi):
    queryset = SignatureVersion.objects.all()
    serializer_class = VersionSerializer

    @extend_schema(
        operation_id="registry_versions_resolve",
        summary="Resolve a version reference",
        parameters=[
            _NAME_PARAMETER,
            OpenApiParameter(
                "ref",
                str,
                description=(
                    "A version number, an alias, or `latest`. Omitted: the `production` alias "
                    "when set, else the latest version (what an execution without a version runs)."
                ),
                examples=[OpenApiExample("production", value="production")],
            ),
        ],
        responses={
            200: VersionSerializer,
            404: error_response("Unknown signature, or nothing the reference designates."),
        },
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
        summary="List a signature's aliases",
        parameters=[_NAME_PARAMETER],
        responses={200: AliasSerializer(many=True), 404: _UNKNOWN_SIGNATURE},
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

    @extend_schema(
        operation_id="registry_aliases_retrieve",
        summary="Get an alias",
        parameters=[_NAME_PARAMETER, _ALIAS_PARAMETER],
        responses={200: AliasSerializer, 404: error_response("Unknown signature or alias.")},
    )
    def get(self, request: Request, name: str, alias: str) -> Response:
        """One alias and the version it points at."""
        found = selectors.alias_get(signature=self.signature(), name=alias)
        return Response(AliasSerializer(found).data)

    @extend_schema(
        operation_id="registry_aliases_update",
        summary="Set or move an alias",
        parameters=[_NAME_PARAMETER, _ALIAS_PARAMETER],
        request=AliasMoveSerializer,
        responses={
            200: AliasSerializer,
            400: error_response("The body or the alias name (`latest` included) is invalid."),
            403: error_response(
                "Needs `registry.add_alias` and `registry.change_alias`; an API key may only "
                "read the registry."
            ),
            404: error_response("Unknown signature or version."),
            409: error_response("The alias has moved since `expected_version`."),
        },
        examples=[
            OpenApiExample("Point at a version", request_only=True, value={"version": 1}),
            OpenApiExample(
                "Move only if it has not moved meanwhile",
                request_only=True,
                value={"version": 2, "expected_version": 1},
            ),
        ],
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

    @extend_schema(
        operation_id="registry_aliases_destroy",
        summary="Remove an alias",
        parameters=[_NAME_PARAMETER, _ALIAS_PARAMETER],
        responses={
            204: OpenApiResponse(description="Removed."),
            403: error_response(
                "Needs `registry.delete_alias`; an API key may only read the registry."
            ),
            404: error_response("Unknown signature or alias."),
        },
    )
    def delete(self, request: Request, name: str, alias: str) -> Response:
        """Remove an alias."""
        alias_remove(signature=self.signature(), name=alias, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
