"""The real default model (SmolLM2-135M-Instruct) through the provider service."""

import io

import pytest
from django.core.management import call_command

from providers.adapters import CompactAdapter
from providers.calls import provider_execute
from providers.lms import provider_adapter
from providers.selectors import provider_get_default
from registry.library import SIGNATURES
from registry.programs import program_build

pytestmark = [pytest.mark.django_db, pytest.mark.slow_model]

LIBRARY = {entry["name"]: entry for entry in SIGNATURES}

# One input per template of the library: every one must parse with the default model.
LIBRARY_INPUTS = {
    "qa": {"question": "Who wrote Romeo and Juliet?"},
    "qa_with_context": {
        "context": "Alice is 30 years old. Bob is 25 years old.",
        "question": "How old is Bob?",
    },
    "summarize": {
        "text": "The meeting covered budget cuts for next year, the hiring of a new engineer, "
        "and the office move planned for March.",
        "max_words": 20,
    },
    "classify_topic": {"text": "The team won the championship after a penalty shoot-out."},
    "sentiment": {"text": "I love this movie, it was wonderful!"},
    "extract_entities": {"text": "Marie Curie worked in Paris with Pierre Curie."},
    "extract_facts": {"text": "The Eiffel Tower is 330 metres tall. It was completed in 1889."},
    "extract_fields": {
        "text": "Order 1234 from John Smith, total 59.90 EUR.",
        "field_names": ["order_id", "customer", "total"],
    },
    "translate": {"text": "Good morning, how are you?", "target_language": "French"},
    "math_word_problem": {"problem": "Tom has 3 apples and buys 2 more. How many does he have?"},
    "verify_claim": {
        "claim": "Water boils at 100 C at sea level.",
        "evidence": "At sea level, water boils at 100 degrees Celsius.",
    },
}


@pytest.fixture
def local_default(default_model_dir):
    output = io.StringIO()
    call_command("providers_install_default_model", stdout=output)
    assert "already installed" in output.getvalue() or "Installed" in output.getvalue()
    provider = provider_get_default()
    assert provider.name == "local-default"
    assert provider.model_path() == default_model_dir
    return provider


def run_template(provider, name: str, inputs: dict):
    spec = LIBRARY[name]["spec"]
    return provider_execute(
        provider=provider,
        program=program_build(name=name, behaviour=spec),
        inputs=inputs,
        config=dict(spec["lm_defaults"]),
    )


@pytest.mark.parametrize(
    ("question", "expected"),
    [("What is the capital of France?", "Paris"), ("What is 2 + 2?", "4")],
)
def test_default_model_answers_simple_questions(local_default, question, expected):
    assert isinstance(provider_adapter(provider=local_default), CompactAdapter)
    result = run_template(local_default, "qa", {"question": question})
    assert expected in result.outputs["answer"]
    assert result.input_tokens > 0
    assert result.output_tokens > 0
    assert result.peak_memory_mb > 0


def test_every_library_template_parses(local_default):
    assert set(LIBRARY_INPUTS) == set(LIBRARY), "an input for each template of the library"
    for name, inputs in LIBRARY_INPUTS.items():
        result = run_template(local_default, name, inputs)
        output_fields = [field["name"] for field in LIBRARY[name]["spec"]["output_fields"]]
        for field in output_fields:
            assert result.outputs[field] is not None, (name, result.outputs)
