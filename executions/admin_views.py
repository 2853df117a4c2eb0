"""The admin's "Try it": run a signature version, or an unsaved draft, on a chosen provider.

These pages live here, not in the registry's admin, because running needs the executions and
providers layers that the registry may not import; ``executions.admin_urls`` wires them into
the admin site and the registry's templates link to them by URL name.

A saved version runs the way an execute request does (``execution_create``, then the sync
wait), so the run is recorded, counted in the client's queue share and routed to the cluster
its provider needs: a local model runs in the inference workers, never in the web process.
A draft has no version row for a worker to load, so it is called in this process through the
one guarded provider call (``provider_call``, breaker included) and recorded nowhere; a local
provider cannot run it (its model lives in the inference workers), and the page says so.
"""

import json
import uuid
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.forms import Form
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse

from core.errors import ApplicationError
from executions.forms import TryItInputsForm, TryItRunForm
from executions.models import Execution
from executions.selectors import execution_attempts, execution_list, execution_wait
from executions.services.create import execution_config_validate, execution_create
from providers.calls import ProviderCall, provider_call, provider_route
from providers.exceptions import ProviderDisabled
from providers.selectors import provider_get
from registry.admin_views import draft_spec, pretty_json
from registry.exceptions import InvalidSpec, errors_flatten
from registry.forms import FieldRowFormSet, VersionDraftForm
from registry.inputs import signature_version_validate_inputs
from registry.models import Signature, SignatureVersion
from registry.programs import program_build
from registry.services.versions import version_spec_check
from registry.specs import VersionSpec

LOCAL_DRAFT_MESSAGE = (
    "{name} is a local model: it runs only in the inference workers, which run saved versions. "
    "Save the draft (a draft identical to the latest version creates nothing) and try the "
    "version, or pick a remote or custom provider."
)


def _require_editor(request: HttpRequest) -> None:
    # Trying a version runs it on a real provider: for those who may edit signatures.
    if not request.user.has_perm("registry.change_signature"):
        raise PermissionDenied


def _context(request: HttpRequest, **values: Any) -> dict[str, Any]:
    return {
        **admin.site.each_context(request),
        "opts": SignatureVersion._meta,
        **values,
    }


def _place_errors(error: ApplicationError, inputs: Form, run: Form) -> None:
    """Put an execute request's errors on the form fields they name, the rest on the form."""
    placed = False
    for key, problems in error.errors.items():
        form = inputs if key in inputs.fields else run if key in run.fields else None
        if form is None:
            continue
        for problem in problems:
            form.add_error(key, problem["message"] if isinstance(problem, dict) else str(problem))
        placed = True
    if not placed:
        inputs.add_error(None, str(error))


# A saved version.


def try_version_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Run a saved version with typed-in inputs; the run is an execution like any other.

    A run redirects to this page with `?execution=<id>`, which shows the outputs, the attempts
    with their prompt and raw output, and the form filled in again.
    """
    _require_editor(request)
    version = get_object_or_404(SignatureVersion.objects.select_related("signature"), pk=pk)
    execution = _own_execution(request, version)
    posted = request.POST if request.method == "POST" else None
    inputs = TryItInputsForm(
        posted, input_fields=version.input_fields, initial=execution.inputs if execution else None
    )
    run = TryItRunForm(posted, initial=_run_initial(execution))
    if posted is not None and inputs.is_valid() and run.is_valid():
        created = _run_version(request, version, inputs, run)
        if created is not None:
            url = reverse("executions_try_version", args=[version.pk])
            return HttpResponseRedirect(f"{url}?execution={created.id}")
    if execution is not None and not execution.is_finished:
        execution = execution_wait(
            execution_id=execution.id, timeout_s=settings.EXECUTIONS_DEFAULT_SYNC_TIMEOUT_S
        )
    context = _context(
        request,
        title=f"Try {version}",
        version=version,
        inputs_form=inputs,
        run_form=run,
        execution=execution,
        outputs=pretty_json(execution.outputs) if execution and execution.outputs else "",
        attempts=list(execution_attempts(execution=execution)) if execution else [],
    )
    return TemplateResponse(request, "executions/try_it.html", context)


def _own_execution(request: HttpRequest, version: SignatureVersion) -> Execution | None:
    """The execution named by `?execution=`, when it is this user's run of this version."""
    try:
        execution_id = uuid.UUID(request.GET.get("execution", ""))
    except ValueError:
        return None
    return (
        execution_list()
        .filter(id=execution_id, signature_version=version, created_by=request.user, api_key=None)
        .first()
    )


def _run_initial(execution: Execution | None) -> dict[str, Any]:
    if execution is None:
        return {}
    return {"provider": execution.requested_provider.name} | {
        key: execution.config[key]
        for key in ("temperature", "max_tokens")
        if key in execution.config
    }


def _run_version(
    request: HttpRequest, version: SignatureVersion, inputs: TryItInputsForm, run: TryItRunForm
) -> Execution | None:
    """Create the execution and wait for it as a sync request does; None (the errors put on
    the forms) when the request is refused."""
    try:
        result = execution_create(
            signature=version.signature.name,
            version=version.number,
            inputs=inputs.cleaned_data,
            config=run.config(),
            provider=run.cleaned_data["provider"],
            mode=Execution.Mode.SYNC,
            timeout_s=settings.EXECUTIONS_DEFAULT_SYNC_TIMEOUT_S,
            user=request.user,
            # The editor wants to see what was sent and what came back, even when it worked.
            keep_trace=True,
        )
    except ApplicationError as error:
        _place_errors(error, inputs, run)
        return None
    execution = result.execution
    if not execution.is_finished:
        execution = execution_wait(
            execution_id=execution.id, timeout_s=settings.EXECUTIONS_DEFAULT_SYNC_TIMEOUT_S
        )
    return execution


# An unsaved draft.


def try_draft_view(request: HttpRequest, signature_pk: int) -> HttpResponse:
    """Run the draft form's unsaved spec: reached by the draft form's "Try it" button (the
    draft's own fields), then by this page's form (the spec carried as JSON, checked again)."""
    _require_editor(request)
    signature = get_object_or_404(Signature, pk=signature_pk)
    if request.method != "POST":
        return HttpResponseRedirect(
            reverse("admin:registry_signature_new_version", args=[signature.pk])
        )
    try:
        spec = _posted_spec(request, signature)
    except InvalidSpec as error:
        context = _context(
            request,
            title=f"Try a draft of {signature.name}",
            signature=signature,
            spec_errors=errors_flatten(error.errors),
        )
        return TemplateResponse(request, "executions/try_it_draft.html", context)
    running = "run" in request.POST
    posted = request.POST if running else None
    inputs = TryItInputsForm(posted, input_fields=spec.input_fields)
    run = TryItRunForm(posted)
    call = None
    if running and inputs.is_valid() and run.is_valid():
        call = _run_draft(signature, spec, inputs, run)
    context = _context(
        request,
        title=f"Try a draft of {signature.name}",
        signature=signature,
        spec=spec,
        spec_json=json.dumps(spec.as_dict(), ensure_ascii=False),
        inputs_form=inputs,
        run_form=run,
        call=call,
        outputs=pretty_json(call.result.outputs) if call and call.result else "",
    )
    return TemplateResponse(request, "executions/try_it_draft.html", context)


def _posted_spec(request: HttpRequest, signature: Signature) -> VersionSpec:
    """The draft's spec, fully checked (its compiled state loads), or InvalidSpec."""
    if "draft_spec" in request.POST:
        try:
            data = json.loads(request.POST["draft_spec"])
        except ValueError:
            raise InvalidSpec({"non_field_errors": ["The draft is not valid JSON."]}) from None
        return version_spec_check(name=signature.name, data=data)
    draft = VersionDraftForm(request.POST)
    rows = FieldRowFormSet(request.POST, prefix="fields")
    if not (draft.is_valid() and rows.is_valid()):
        errors: dict[str, Any] = dict(draft.errors)
        for index, row_errors in enumerate(rows.errors):
            errors |= {f"row {index + 1} {key}": value for key, value in row_errors.items()}
        raise InvalidSpec(errors or {"non_field_errors": rows.non_form_errors()})
    return version_spec_check(name=signature.name, data=draft_spec(draft, rows)[0])


def _run_draft(
    signature: Signature, spec: VersionSpec, inputs: TryItInputsForm, run: TryItRunForm
) -> ProviderCall | None:
    # Never saved: it gives the input validation a version to read the input fields from.
    unsaved = SignatureVersion(signature=signature, **spec.as_dict())
    try:
        clean = signature_version_validate_inputs(version=unsaved, inputs=inputs.cleaned_data)
        config = execution_config_validate(config=run.config(), defaults=spec.lm_defaults)
        provider = provider_get(name=run.cleaned_data["provider"])
        if not provider.enabled:
            raise ProviderDisabled(provider.name)
    except ApplicationError as error:
        _place_errors(error, inputs, run)
        return None
    if provider_route(provider=provider).cluster is not None:
        run.add_error("provider", LOCAL_DRAFT_MESSAGE.format(name=provider.name))
        return None
    program = program_build(name=signature.name, behaviour=spec.as_dict())
    return provider_call(provider=provider, program=program, inputs=clean, config=config)
