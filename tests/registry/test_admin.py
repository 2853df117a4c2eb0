"""The admin console: read-only versions, drafts that save new versions, diffs, aliases."""

import json

import pytest
from django.test import Client
from django.urls import reverse

from registry.models import Alias, Signature, SignatureVersion
from registry.services.aliases import alias_set

pytestmark = pytest.mark.django_db


def _draft_post(version: SignatureVersion, **overrides) -> dict:
    """The draft form's POST body, as the browser sends it for an unchanged copy of version."""
    rows = [("input", f) for f in version.input_fields] + [
        ("output", f) for f in version.output_fields
    ]
    data = {
        "module_kind": version.module_kind,
        "instructions": version.instructions,
        "temperature": version.lm_defaults.get("temperature", ""),
        "max_tokens": version.lm_defaults.get("max_tokens", ""),
        "compiled_state": json.dumps(version.compiled_state) if version.compiled_state else "",
        "changelog": "",
        "fields-TOTAL_FORMS": str(len(rows) + 1),
        "fields-INITIAL_FORMS": str(len(rows)),
        "fields-MIN_NUM_FORMS": "0",
        "fields-MAX_NUM_FORMS": "1000",
    }
    for index, (role, field) in enumerate(rows):
        data |= {
            f"fields-{index}-role": role,
            f"fields-{index}-name": field["name"],
            f"fields-{index}-type": field["type"],
            f"fields-{index}-description": field["description"],
            f"fields-{index}-prefix": field.get("prefix") or "",
            f"fields-{index}-choices": "\n".join(field.get("choices", [])),
        }
    extra = len(rows)
    data |= {f"fields-{extra}-role": "input", f"fields-{extra}-type": "str"}
    return data | overrides


def test_signature_changelist_search_and_filters(admin_client, library):
    url = reverse("admin:registry_signature_changelist")
    page = admin_client.get(url)
    assert page.status_code == 200
    assert "classify_topic" in page.content.decode()
    assert "production → v1" in page.content.decode()
    found = admin_client.get(url, {"q": "sentiment"}).context["cl"].result_list
    assert [s.name for s in found] == ["sentiment"]
    by_tag = admin_client.get(url, {"tag": "rag"}).context["cl"].result_list
    assert [s.name for s in by_tag] == ["qa_with_context"]
    by_kind = admin_client.get(url, {"module_kind": "ChainOfThought"}).context["cl"].result_list
    assert sorted(s.name for s in by_kind) == ["math_word_problem", "verify_claim"]
    by_alias = admin_client.get(url, {"alias": "production"}).context["cl"].result_list
    assert len(by_alias) == len(library)


def test_signature_page_has_history_and_tools(admin_client, library):
    signature = library["qa"].signature
    page = admin_client.get(reverse("admin:registry_signature_change", args=[signature.pk]))
    content = page.content.decode()
    assert page.status_code == 200
    assert "version history (newest first, latest 50)" in content.lower()
    assert reverse("admin:registry_signatureversion_change", args=[library["qa"].pk]) in content
    assert "New version (draft from latest)" in content
    assert "alias history" in content.lower()


def test_signature_page_tools_follow_the_version_count(admin_client, make_signature):
    def tools(signature: Signature) -> str:
        url = reverse("admin:registry_signature_change", args=[signature.pk])
        return admin_client.get(url).content.decode()

    blank = tools(make_signature("blank", versions=0))
    assert "Add the first version" in blank
    assert "Compare versions" not in blank
    one = tools(make_signature("one", versions=1))
    assert "New version (draft from latest)" in one
    assert "Compare versions" not in one
    assert "Compare versions" in tools(make_signature("two", versions=2))


def test_signature_add_and_edit_through_services(admin_client):
    response = admin_client.post(
        reverse("admin:registry_signature_add"),
        {"name": "triage", "description": "Ticket triage.", "tags": "Support, ops"},
    )
    assert response.status_code == 302
    signature = Signature.objects.get(name="triage")
    assert signature.tags == ["ops", "support"]
    bad = admin_client.post(reverse("admin:registry_signature_add"), {"name": "Bad Name"})
    assert bad.status_code == 200
    assert "lowercase letter" in bad.content.decode()


def test_signature_with_versions_cannot_be_deleted(admin_client, library):
    signature = library["qa"].signature
    response = admin_client.get(reverse("admin:registry_signature_delete", args=[signature.pk]))
    assert response.status_code == 403


def test_version_page_is_read_only(admin_client, library):
    version = library["classify_topic"]
    url = reverse("admin:registry_signatureversion_change", args=[version.pk])
    page = admin_client.get(url)
    content = page.content.decode()
    assert page.status_code == 200
    assert version.content_hash in content
    assert 'class="registry-fields"' in content
    assert "business, politics" in content  # the Literal choices in the fields table
    assert 'name="_save"' not in content
    assert "Duplicate as draft" in content and "Set alias" in content
    assert admin_client.post(url, {"instructions": "Changed."}).status_code == 403
    assert (
        admin_client.get(
            reverse("admin:registry_signatureversion_delete", args=[version.pk])
        ).status_code
        == 403
    )
    assert admin_client.get(reverse("admin:registry_signatureversion_add")).status_code == 403
    version.refresh_from_db()
    assert version.instructions != "Changed."


def test_draft_is_prefilled_and_saves_a_new_version(admin_client, library):
    version = library["sentiment"]
    url = reverse("admin:registry_signature_new_version", args=[version.signature_id])
    page = admin_client.get(url, {"from": version.number})
    assert page.status_code == 200
    assert page.context["draft"].initial["instructions"] == version.instructions
    assert page.context["rows"].initial[1]["choices"] == "positive\nnegative\nneutral"

    data = _draft_post(
        version,
        instructions="Judge the sentiment strictly.",
        changelog="Stricter.",
        **{"fields-1-choices": "positive\nnegative\nneutral\nmixed"},
    )
    response = admin_client.post(url, data)
    assert response.status_code == 302
    new = SignatureVersion.objects.get(signature=version.signature, number=2)
    assert response.url == reverse("admin:registry_signatureversion_change", args=[new.pk])
    assert new.output_fields[0]["choices"] == ["positive", "negative", "neutral", "mixed"]
    assert new.changelog == "Stricter."
    assert new.author.username == "admin"
    version.refresh_from_db()
    assert version.instructions != "Judge the sentiment strictly."  # the original never changes


def test_draft_can_add_and_drop_fields(admin_client, library):
    version = library["qa"]
    url = reverse("admin:registry_signature_new_version", args=[version.signature_id])
    data = _draft_post(
        version,
        **{
            "fields-2-role": "output",
            "fields-2-name": "confidence",
            "fields-2-type": "float",
            "fields-2-description": "From 0 to 1.",
        },
    )
    assert admin_client.post(url, data).status_code == 302
    new = SignatureVersion.objects.get(signature=version.signature, number=2)
    assert [f["name"] for f in new.output_fields] == ["answer", "confidence"]


def test_unchanged_draft_creates_nothing(admin_client, library):
    version = library["qa"]
    url = reverse("admin:registry_signature_new_version", args=[version.signature_id])
    response = admin_client.post(url, _draft_post(version), follow=True)
    assert "nothing was created" in response.content.decode()
    assert version.signature.versions.count() == 1


def test_draft_errors_land_on_their_rows(admin_client, library):
    version = library["translate"]
    url = reverse("admin:registry_signature_new_version", args=[version.signature_id])
    data = _draft_post(
        version,
        **{"fields-1-name": "lm", "fields-2-type": "literal", "fields-2-choices": ""},
    )
    response = admin_client.post(url, data)
    assert response.status_code == 200
    rows = response.context["rows"].forms
    assert "reserved by DSPy" in rows[1].errors["name"][0]
    assert "needs `choices`" in rows[2].errors["choices"][0]
    assert version.signature.versions.count() == 1


def test_draft_lm_default_errors_land_on_their_fields(admin_client, library):
    version = library["qa"]
    url = reverse("admin:registry_signature_new_version", args=[version.signature_id])
    response = admin_client.post(url, _draft_post(version, max_tokens="2000000"))
    assert response.status_code == 200
    assert response.context["draft"].errors["max_tokens"] == [
        "'max_tokens' must be an integer from 1 to 32768."
    ]
    assert version.signature.versions.count() == 1


def test_first_version_of_an_empty_signature(admin_client):
    signature = Signature.objects.create(name="blank")
    url = reverse("admin:registry_signature_new_version", args=[signature.pk])
    assert admin_client.get(url).status_code == 200
    data = {
        "module_kind": "Predict",
        "instructions": "Echo.",
        "fields-TOTAL_FORMS": "2",
        "fields-INITIAL_FORMS": "0",
        "fields-MIN_NUM_FORMS": "0",
        "fields-MAX_NUM_FORMS": "1000",
        "fields-0-role": "input",
        "fields-0-name": "text",
        "fields-0-type": "str",
        "fields-1-role": "output",
        "fields-1-name": "echo",
        "fields-1-type": "str",
    }
    assert admin_client.post(url, data).status_code == 302
    assert signature.versions.get().number == 1


def test_diff_between_versions(admin_client, library):
    version = library["sentiment"]
    url = reverse("admin:registry_signature_new_version", args=[version.signature_id])
    admin_client.post(
        url,
        _draft_post(
            version,
            instructions="A new line.",
            temperature="0.5",
            **{"fields-0-description": "Changed."},
        ),
    )
    diff_url = reverse("admin:registry_signature_diff", args=[version.signature_id])
    page = admin_client.get(diff_url, {"old": 1, "new": 2})
    assert page.status_code == 200
    diff = page.context["diff"]
    assert ("+", "A new line.") in diff.instructions
    assert [(f.name, f.status, f.changed_keys) for f in diff.fields] == [
        ("text", "changed", ("description",)),
        ("sentiment", "unchanged", ()),
    ]
    assert "lm_defaults" in diff.changes
    assert "A new line." in page.content.decode()
    same = admin_client.get(diff_url, {"old": 1, "new": 1})
    assert same.context["diff"].identical
    # A non-ASCII digit is no version number: the defaults apply instead of a server error.
    assert admin_client.get(diff_url, {"old": "²"}).context["diff"].old.number == 1
    draft = admin_client.get(url, {"from": "²"})
    assert draft.context["source"].number == 2


def test_set_move_and_remove_alias(admin_client, library):
    signature = library["qa"].signature
    url = reverse("admin:registry_signature_new_version", args=[signature.pk])
    admin_client.post(url, _draft_post(library["qa"], instructions="Second."))
    second = signature.versions.get(number=2)
    alias_url = reverse("admin:registry_signatureversion_alias", args=[second.pk])
    assert admin_client.get(alias_url).status_code == 200
    response = admin_client.post(alias_url, {"name": "production"}, follow=True)
    assert "Moved qa@production from v1 to v2." in response.content.decode()
    assert Alias.objects.get(signature=signature, name="production").version == second
    invalid = admin_client.post(alias_url, {"name": "latest"})
    assert "implicit" in invalid.content.decode()
    admin_client.post(alias_url, {"remove": "production"})
    assert not Alias.objects.filter(signature=signature, name="production").exists()


def test_version_actions_redirect_to_their_forms(admin_client, library):
    version = library["qa"]
    url = reverse("admin:registry_signatureversion_changelist")
    draft = admin_client.post(
        url, {"action": "duplicate_as_draft", "_selected_action": [version.pk]}
    )
    assert draft.status_code == 302
    assert draft.url.endswith(f"/new-version/?from={version.number}")
    alias = admin_client.post(url, {"action": "set_alias", "_selected_action": [version.pk]})
    assert alias.url == reverse("admin:registry_signatureversion_alias", args=[version.pk])
    two = admin_client.post(
        url,
        {"action": "set_alias", "_selected_action": [version.pk, library["sentiment"].pk]},
        follow=True,
    )
    assert "Select exactly one version." in two.content.decode()


def test_version_changelist_filters(admin_client, library):
    alias_set(signature=library["qa"].signature, name="staging", version=library["qa"])
    url = reverse("admin:registry_signatureversion_changelist")
    staged = admin_client.get(url, {"alias": "staging"}).context["cl"].result_list
    assert list(staged) == [library["qa"]]
    cot = admin_client.get(url, {"module_kind__exact": "ChainOfThought"}).context["cl"]
    assert cot.result_count == 2


def test_staff_without_permissions_cannot_draft_or_alias(library, make_user):
    user = make_user("viewer", perms=("view_signature", "view_signatureversion"), is_staff=True)
    client = Client()
    client.force_login(user)
    version = library["qa"]
    page = client.get(reverse("admin:registry_signatureversion_change", args=[version.pk]))
    assert page.status_code == 200
    assert "Duplicate as draft" not in page.content.decode()
    new_version = reverse("admin:registry_signature_new_version", args=[version.signature_id])
    assert client.get(new_version).status_code == 403
    alias = reverse("admin:registry_signatureversion_alias", args=[version.pk])
    assert client.post(alias, {"name": "production"}).status_code == 403


def test_history_inline_is_bounded(admin_client, make_signature):
    signature = make_signature("long", versions=55)
    page = admin_client.get(reverse("admin:registry_signature_change", args=[signature.pk]))
    content = page.content.decode()
    newest = signature.versions.get(number=55)
    oldest = signature.versions.get(number=1)
    assert reverse("admin:registry_signatureversion_change", args=[newest.pk]) in content
    assert reverse("admin:registry_signatureversion_change", args=[oldest.pk]) not in content


def test_forms_are_styled_and_a_missing_state_shows_empty(admin_client, library):
    version = library["qa"]
    draft = admin_client.get(
        reverse("admin:registry_signature_new_version", args=[version.signature_id])
    )
    content = draft.content.decode()
    assert "admin/css/forms.css" in content  # aligned labels, like every other admin form
    assert version.compiled_state is None
    assert "null</textarea>" not in content
    alias = admin_client.get(reverse("admin:registry_signatureversion_alias", args=[version.pk]))
    assert "admin/css/forms.css" in alias.content.decode()


def test_draft_errors_are_announced_above_the_form(admin_client, library):
    version = library["qa"]
    url = reverse("admin:registry_signature_new_version", args=[version.signature_id])
    page = admin_client.post(url, _draft_post(version, **{"fields-0-name": "1bad"}))
    assert page.status_code == 200
    assert "Please correct the errors below" in page.content.decode()


def test_signature_page_starts_with_the_name(admin_client, library):
    signature = library["qa"].signature
    page = admin_client.get(reverse("admin:registry_signature_change", args=[signature.pk]))
    content = page.content.decode()
    assert content.index("field-name") < content.index("field-description")


def test_version_page_shows_lm_defaults_as_a_block(admin_client, library):
    version = library["qa"]
    assert version.lm_defaults
    page = admin_client.get(reverse("admin:registry_signatureversion_change", args=[version.pk]))
    assert "<pre>{\n  &quot;max_tokens&quot;" in page.content.decode()


def test_module_kind_filter_follows_the_latest_version(admin_client, library):
    version = library["qa"]
    draft = reverse("admin:registry_signature_new_version", args=[version.signature_id])
    admin_client.post(draft, _draft_post(version, module_kind="ChainOfThought"))
    url = reverse("admin:registry_signature_changelist")
    by_kind = admin_client.get(url, {"module_kind": "ChainOfThought"}).context["cl"].result_list
    assert "qa" in [s.name for s in by_kind]
    predict = admin_client.get(url, {"module_kind": "Predict"}).context["cl"].result_list
    assert "qa" not in [s.name for s in predict]  # v1 was Predict, but the list shows v2's kind


def test_read_only_signature_page_shows_tags_as_text(library, make_user):
    user = make_user("viewer", perms=("view_signature",), is_staff=True)
    client = Client()
    client.force_login(user)
    signature = library["qa"].signature
    page = client.get(reverse("admin:registry_signature_change", args=[signature.pk]))
    content = page.content.decode()
    assert page.status_code == 200
    assert "general, qa" in content
    assert "[&quot;general&quot;" not in content
