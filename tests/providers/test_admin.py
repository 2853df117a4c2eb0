import pytest

from providers import services
from providers.models import Provider, ProviderFallback
from tests.support.engines import SCRIPTED_ENGINE
from tests.support.factories import ProviderFactory

pytestmark = pytest.mark.django_db

SECRET = "sk-admin-secret-value-456"


def form_data(**overrides) -> dict:
    data = {
        "name": "edited",
        "kind": "custom",
        "model": "m",
        "enabled": "on",
        "adapter": "compact",
        "max_tokens": "32",
        "temperature": "0",
        "top_p": "1",
        "timeout_s": "60",
        "hardware_optimization": "on",
        "base_url": "",
        "api_key_env": "",
        "engine_path": SCRIPTED_ENGINE,
        "fallback_links-TOTAL_FORMS": "0",
        "fallback_links-INITIAL_FORMS": "0",
        "fallback_links-MIN_NUM_FORMS": "0",
        "fallback_links-MAX_NUM_FORMS": "1000",
    }
    return data | overrides


def with_fallbacks(data: dict, rows: list[tuple[Provider, int]]) -> dict:
    data = dict(data)
    data["fallback_links-TOTAL_FORMS"] = str(len(rows))
    for index, (fallback, position) in enumerate(rows):
        data[f"fallback_links-{index}-fallback"] = str(fallback.pk)
        data[f"fallback_links-{index}-position"] = str(position)
    return data


def test_changelist_links_the_hardware_report(admin_client):
    ProviderFactory(name="listed")
    response = admin_client.get("/admin/providers/provider/")
    assert response.status_code == 200
    assert b"listed" in response.content
    assert b"/admin/providers/provider/hardware/" in response.content


def test_hardware_page(admin_client):
    response = admin_client.get("/admin/providers/provider/hardware/")
    assert response.status_code == 200
    assert b"mlx_backend" in response.content


def test_add_with_ordered_fallbacks(admin_client):
    first, second = ProviderFactory(name="first"), ProviderFactory(name="second")
    data = with_fallbacks(form_data(), [(second, 0), (first, 1)])
    response = admin_client.post("/admin/providers/provider/add/", data)
    assert response.status_code == 302, response.context["errors"]
    links = ProviderFallback.objects.filter(provider__name="edited").order_by("position")
    assert [(link.fallback.name, link.position) for link in links] == [
        ("second", 0),
        ("first", 1),
    ]


def test_reordering_swaps_positions(admin_client):
    main, a, b = ProviderFactory(name="main"), ProviderFactory(name="a"), ProviderFactory(name="b")
    services.provider_set_fallbacks(provider=main, fallbacks=[a, b])
    links = list(ProviderFallback.objects.filter(provider=main).order_by("position"))
    data = form_data(name="main")
    data |= {
        "fallback_links-TOTAL_FORMS": "2",
        "fallback_links-INITIAL_FORMS": "2",
        "fallback_links-0-id": str(links[0].pk),
        "fallback_links-0-provider": str(main.pk),
        "fallback_links-0-fallback": str(a.pk),
        "fallback_links-0-position": "1",
        "fallback_links-1-id": str(links[1].pk),
        "fallback_links-1-provider": str(main.pk),
        "fallback_links-1-fallback": str(b.pk),
        "fallback_links-1-position": "0",
    }
    response = admin_client.post(f"/admin/providers/provider/{main.pk}/change/", data)
    assert response.status_code == 302, response.context["inline_admin_formsets"][0].formset.errors
    order = ProviderFallback.objects.filter(provider=main).order_by("position")
    assert [link.fallback.name for link in order] == ["b", "a"]


def test_validation_errors_are_shown_on_the_form(admin_client, tmp_path):
    response = admin_client.post(
        "/admin/providers/provider/add/",
        form_data(kind="mlx", model=str(tmp_path / "gone"), engine_path=""),
    )
    assert response.status_code == 200
    assert "does not exist" in str(response.context["adminform"].form.errors["model"])
    assert not Provider.objects.filter(name="edited").exists()


def test_a_cycle_is_shown_on_the_form(admin_client):
    a, b = ProviderFactory(name="a"), ProviderFactory(name="b")
    services.provider_set_fallbacks(provider=a, fallbacks=[b])
    data = with_fallbacks(form_data(name="b"), [(a, 0)])
    response = admin_client.post(f"/admin/providers/provider/{b.pk}/change/", data)
    assert response.status_code == 200
    formset = response.context["inline_admin_formsets"][0].formset
    assert formset.non_form_errors() == ["Falling back to 'a' makes a cycle: b -> a -> b."]
    assert not ProviderFallback.objects.filter(provider=b).exists()


def test_the_api_key_is_never_shown(admin_client, monkeypatch):
    monkeypatch.setenv("DSPY_TOOLKIT_PROVIDER_KEY_ADMIN_TEST", SECRET)
    provider = ProviderFactory(
        name="remote",
        kind="openai",
        base_url="http://h/v1",
        api_key_env="DSPY_TOOLKIT_PROVIDER_KEY_ADMIN_TEST",
    )
    for url in ("/admin/providers/provider/", f"/admin/providers/provider/{provider.pk}/change/"):
        response = admin_client.get(url)
        assert response.status_code == 200
        assert SECRET not in response.content.decode()
    assert "DSPY_TOOLKIT_PROVIDER_KEY_ADMIN_TEST" in response.content.decode()


def test_hardware_page_reads_as_text(admin_client):
    content = admin_client.get("/admin/providers/provider/hardware/").content.decode()
    assert " bytes)</td>" in content  # memory in GB/MB, with the exact count beside it
    assert "False</td>" not in content and "True</td>" not in content
    assert "[" not in content.split('id="content"', 1)[1]


def test_changelist_shows_each_fallback_chain(admin_client, django_assert_max_num_queries):
    front, first, second = (ProviderFactory(name=name) for name in ("front", "first", "second"))
    services.provider_set_fallbacks(provider=front, fallbacks=[second, first])
    for index in range(5):
        services.provider_set_fallbacks(
            provider=ProviderFactory(name=f"extra-{index}"), fallbacks=[first]
        )
    # One prefetch for every row's chain; three for the health of the whole page.
    with django_assert_max_num_queries(11):
        content = admin_client.get("/admin/providers/provider/").content.decode()
    assert "second → first" in content
    assert '<td class="field-adapter_value">compact</td>' in content
