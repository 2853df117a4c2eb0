"""REST API of a signature's datasets (mounted under /api/v1/signatures/<name>/datasets/).

Reading needs an authenticated client (an API key or a staff session); importing needs
`registry.add_dataset` (and `registry.change_dataset` to replace an existing dataset's
examples), deleting `registry.delete_dataset`, as the registry's other writes. An import is a
JSON body holding the file's text (`content`) or the rows themselves (`examples`), or a
multipart upload with a `file`; either way it is all or nothing (`registry.services.datasets`).
"""

from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from core.api.parsers import JSONParser
from core.api.schema import JSONObjectField, error_response
from registry import selectors
from registry.api import _NAME_PARAMETER, _UNKNOWN_SIGNATURE, RegistryApi
from registry.models import Dataset, DatasetExample, DatasetSplit
from registry.services.datasets import (
    MEDIA_TYPES,
    DatasetFormat,
    dataset_delete,
    dataset_export,
    dataset_format_for,
    dataset_import,
)
from registry.specs import NAME_MAX_LENGTH, NAME_PATTERN

# Serializers


class DatasetSerializer(serializers.ModelSerializer):
    signature = serializers.CharField(source="signature.name")
    split_counts = serializers.DictField(
        child=serializers.IntegerField(), help_text='Examples per split, e.g. {"train": 80}.'
    )
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = Dataset
        fields = [
            "name",
            "signature",
            "description",
            "content_hash",
            "example_count",
            "split_counts",
            "source",
            "created_by",
            "created_at",
            "updated_at",
        ]

    def get_created_by(self, dataset: Dataset) -> str | None:
        return dataset.created_by.get_username() if dataset.created_by else None


class DatasetExampleSerializer(serializers.ModelSerializer):
    inputs = JSONObjectField(help_text="A value per input field.")
    outputs = JSONObjectField(help_text="The expected value per output field.")
    accepted = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Further accepted answers per str output field.",
    )

    class Meta:
        model = DatasetExample
        fields = ["position", "split", "inputs", "outputs", "accepted"]


class _ImportOptionsSerializer(serializers.Serializer):
    name = serializers.RegexField(
        NAME_PATTERN,
        max_length=NAME_MAX_LENGTH,
        help_text="The dataset's name within the signature, e.g. `starter`.",
    )
    split = serializers.ChoiceField(
        choices=DatasetSplit.choices,
        default=DatasetSplit.TRAIN,
        help_text="The split of rows that name none.",
    )
    replace = serializers.BooleanField(
        default=False,
        help_text=(
            "Replace the examples of an existing dataset of this name (needs "
            "`registry.change_dataset`); without it an existing name is a 409."
        ),
    )
    description = serializers.CharField(
        required=False, allow_blank=True, help_text="Omitted: kept when replacing."
    )
    version = serializers.CharField(
        required=False,
        max_length=NAME_MAX_LENGTH,
        help_text=(
            "The version (a number or an alias) whose fields check the rows. Omitted: "
            "`production` when set, else the latest version."
        ),
    )


class DatasetImportSerializer(_ImportOptionsSerializer):
    """A JSON import: the file's text or the rows, exactly one of them."""

    format = serializers.ChoiceField(
        choices=DatasetFormat.choices,
        default=DatasetFormat.JSONL,
        help_text="The format of `content`.",
    )
    content = serializers.CharField(
        required=False,
        trim_whitespace=False,
        help_text="The file's text: JSONL (an object per line) or CSV (a header row first).",
    )
    examples = serializers.ListField(
        child=JSONObjectField(),
        required=False,
        help_text="The rows as objects, each shaped like a JSONL line.",
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if ("content" in data) == ("examples" in data):
            raise ValidationError(
                {"content": ["Give exactly one of `content` (the file's text) and `examples`."]}
            )
        return data


class DatasetUploadSerializer(_ImportOptionsSerializer):
    """A multipart import: the file itself."""

    file = serializers.FileField(help_text="A .jsonl or .csv file.")
    format = serializers.ChoiceField(
        choices=DatasetFormat.choices,
        required=False,
        help_text="Omitted: taken from the file name's extension.",
    )


class ExamplesQuerySerializer(serializers.Serializer):
    split = serializers.ChoiceField(choices=DatasetSplit.choices, required=False)


class ExportQuerySerializer(ExamplesQuerySerializer):
    format = serializers.ChoiceField(choices=DatasetFormat.choices, default=DatasetFormat.JSONL)


_DATASET_PARAMETER = OpenApiParameter(
    "dataset",
    {"type": "string", "pattern": NAME_PATTERN.pattern, "maxLength": NAME_MAX_LENGTH},
    OpenApiParameter.PATH,
    description="The dataset's name.",
    examples=[OpenApiExample("starter", value="starter")],
)
_SPLIT_PARAMETER = OpenApiParameter(
    "split", str, enum=DatasetSplit.values, description="Only the examples of this split."
)
_UNKNOWN_DATASET = error_response("Unknown signature or dataset.")
_HASH = "5d41402abc4b2a76b9719d911017c592ae2c9a5e7c8b1d4f3e2a1b0c9d8e7f6a"
_DATASET_EXAMPLE = {
    "name": "starter",
    "signature": "qa",
    "description": "Short factual questions.",
    "content_hash": _HASH,
    "example_count": 2,
    "split_counts": {"train": 1, "dev": 1},
    "source": "api",
    "created_by": "operator",
    "created_at": "2026-01-05T10:00:00.000000Z",
    "updated_at": "2026-01-05T10:00:00.000000Z",
}
_JSONL = (
    '{"split": "train", "question": "What is the capital of France?", "answer": "Paris"}\n'
    '{"split": "dev", "question": "What is the capital of Italy?", "answer": "Rome", '
    '"accepted": {"answer": ["Roma"]}}\n'
)


def _read_only_permission_error(description: str) -> OpenApiResponse:
    return error_response(f"{description}; an API key may only read the registry.")


class DatasetApi(RegistryApi):
    queryset = Dataset.objects.all()
    serializer_class = DatasetSerializer

    def dataset(self) -> Dataset:
        return selectors.dataset_get(signature=self.signature(), name=self.kwargs["dataset"])


class DatasetListApi(DatasetApi):
    parser_classes = [JSONParser, MultiPartParser]

    @extend_schema(
        operation_id="registry_datasets_list",
        summary="List a signature's datasets",
        parameters=[_NAME_PARAMETER],
        responses={200: DatasetSerializer(many=True), 404: _UNKNOWN_SIGNATURE},
    )
    def get(self, request: Request, name: str) -> Response:
        """The datasets of a signature, by name, with their counts per split and hashes."""
        page = self.paginate_queryset(selectors.dataset_list(signature=self.signature()))
        return self.get_paginated_response(DatasetSerializer(page, many=True).data)

    @extend_schema(
        operation_id="registry_datasets_import",
        summary="Import a dataset",
        parameters=[_NAME_PARAMETER],
        request={
            "application/json": DatasetImportSerializer,
            "multipart/form-data": DatasetUploadSerializer,
        },
        responses={
            201: DatasetSerializer,
            400: error_response(
                "The options or the rows are invalid: `errors.rows` maps each bad row's number "
                "to its fields' problems (at most 100 listed); nothing was imported."
            ),
            403: _read_only_permission_error(
                "Needs `registry.add_dataset` (and `registry.change_dataset` with `replace`)"
            ),
            404: _UNKNOWN_SIGNATURE,
            409: error_response("A dataset of this name exists and `replace` was not set."),
        },
        examples=[
            OpenApiExample(
                "A JSONL file's text",
                request_only=True,
                value={"name": "capitals", "format": "jsonl", "content": _JSONL},
            ),
            OpenApiExample(
                "Rows, replacing an existing dataset's examples",
                request_only=True,
                value={
                    "name": "starter",
                    "replace": True,
                    "split": "dev",
                    "examples": [
                        {
                            "question": "What is 2 + 2?",
                            "answer": "4",
                            "accepted": {"answer": ["four"]},
                        }
                    ],
                },
            ),
            OpenApiExample(
                "Imported", response_only=True, status_codes=["201"], value=_DATASET_EXAMPLE
            ),
        ],
    )
    def post(self, request: Request, name: str) -> Response:
        """Import a dataset (all or nothing): the rows are checked against the signature's
        fields before anything is written."""
        signature = self.signature()
        upload = "file" in request.FILES
        serializer = (DatasetUploadSerializer if upload else DatasetImportSerializer)(
            data=request.data
        )
        if not upload:
            _refuse_unknown_keys(request.data, serializer)
        serializer.is_valid(raise_exception=True)
        options = serializer.validated_data
        if options["replace"] and not request.user.has_perm("registry.change_dataset"):
            raise PermissionDenied("Replacing a dataset needs the change_dataset permission.")
        source: dict[str, Any]
        if upload:
            file = options["file"]
            file_format = options.get("format") or dataset_format_for(file.name)
            if file_format is None:
                raise ValidationError(
                    {"format": ["Name the format: the file name ends in neither .jsonl nor .csv."]}
                )
            source = {"content": file, "format": file_format, "source": f"upload: {file.name}"}
        elif "content" in options:
            source = {"content": options["content"], "format": options["format"], "source": "api"}
        else:
            source = {"rows": options["examples"], "source": "api"}
        dataset = dataset_import(
            signature=signature,
            name=options["name"],
            split=options["split"],
            replace=options["replace"],
            description=options.get("description"),
            version=options.get("version"),
            user=request.user,
            **source,
        )
        dataset = selectors.dataset_get(signature=signature, name=dataset.name)
        return Response(DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)


def _refuse_unknown_keys(data: Any, serializer: serializers.Serializer) -> None:
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["Expected a JSON object."]})
    unknown = sorted(set(data) - set(serializer.fields))
    if unknown:
        raise ValidationError({str(key): ["Not an import option."] for key in unknown})


class DatasetDetailApi(DatasetApi):
    @extend_schema(
        operation_id="registry_datasets_retrieve",
        summary="Get a dataset",
        parameters=[_NAME_PARAMETER, _DATASET_PARAMETER],
        responses={200: DatasetSerializer, 404: _UNKNOWN_DATASET},
        examples=[OpenApiExample("A dataset", response_only=True, value=_DATASET_EXAMPLE)],
    )
    def get(self, request: Request, name: str, dataset: str) -> Response:
        """A dataset: its counts per split, content hash and source."""
        return Response(DatasetSerializer(self.dataset()).data)

    @extend_schema(
        operation_id="registry_datasets_destroy",
        summary="Delete a dataset",
        parameters=[_NAME_PARAMETER, _DATASET_PARAMETER],
        responses={
            204: OpenApiResponse(description="Deleted, with its examples."),
            403: _read_only_permission_error("Needs `registry.delete_dataset`"),
            404: _UNKNOWN_DATASET,
            409: error_response("Evaluation or optimization runs use the dataset."),
        },
    )
    def delete(self, request: Request, name: str, dataset: str) -> Response:
        """Delete a dataset and its examples (refused while runs refer to it)."""
        dataset_delete(dataset=self.dataset())
        return Response(status=status.HTTP_204_NO_CONTENT)


class DatasetExamplesApi(DatasetApi):
    @extend_schema(
        operation_id="registry_datasets_examples",
        summary="List a dataset's examples",
        parameters=[_NAME_PARAMETER, _DATASET_PARAMETER, _SPLIT_PARAMETER],
        responses={200: DatasetExampleSerializer(many=True), 404: _UNKNOWN_DATASET},
    )
    def get(self, request: Request, name: str, dataset: str) -> Response:
        """The examples in file order, optionally of one split."""
        query = ExamplesQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        examples = selectors.dataset_examples(
            dataset=self.dataset(), split=query.validated_data.get("split")
        )
        page = self.paginate_queryset(examples)
        return self.get_paginated_response(DatasetExampleSerializer(page, many=True).data)


class FileFormatNegotiation(DefaultContentNegotiation):
    """On the export route `?format=` names the file's format, not a renderer: errors are
    rendered as JSON, as everywhere else."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class DatasetExportApi(DatasetApi):
    content_negotiation_class = FileFormatNegotiation

    @extend_schema(
        operation_id="registry_datasets_export",
        summary="Download a dataset",
        parameters=[
            _NAME_PARAMETER,
            _DATASET_PARAMETER,
            OpenApiParameter(
                "format",
                str,
                enum=DatasetFormat.values,
                description="`jsonl` (default) or `csv`, the import formats.",
            ),
            _SPLIT_PARAMETER,
        ],
        responses={
            200: OpenApiResponse(
                description=(
                    "The file, as an attachment: `application/x-ndjson` (JSONL) or `text/csv`. "
                    "Importing it again gives a dataset with the same content hash."
                )
            ),
            404: _UNKNOWN_DATASET,
        },
    )
    def get(self, request: Request, name: str, dataset: str) -> StreamingHttpResponse:
        """The examples as a JSONL or CSV file, streamed."""
        query = ExportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        found = self.dataset()
        file_format = query.validated_data["format"]
        split = query.validated_data.get("split")
        response = StreamingHttpResponse(
            dataset_export(dataset=found, format=file_format, split=split),
            content_type=f"{MEDIA_TYPES[file_format]}; charset=utf-8",
        )
        filename = f"{found.signature.name}-{found.name}{f'-{split}' if split else ''}"
        response["Content-Disposition"] = f'attachment; filename="{filename}.{file_format}"'
        return response
