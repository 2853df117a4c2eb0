"""The built-in template library: reusable signatures every installation starts with.

Loaded by ``manage.py registry_load_library`` (and the quick start). Each entry is a signature
(name, description, tags) and the spec of its first version, in the same shape the API and the
export file use. Changing an entry here gives existing installations a new version on their
next load; it never moves their aliases.
"""

from registry.field_types import FieldType
from registry.specs import ModuleKind


def _field(name: str, field_type: str, description: str, **extra) -> dict:
    return {"name": name, "type": field_type, "description": description, **extra}


SIGNATURES: list[dict] = [
    {
        "name": "qa",
        "description": (
            "Question answering from the model's own knowledge. Input: `question` (str). "
            "Output: `answer` (str), short and direct. Use `qa_with_context` when the answer "
            "must come from supplied text."
        ),
        "tags": ["qa", "general"],
        "spec": {
            "instructions": (
                "Answer the question accurately and concisely. Give the answer itself, "
                "without restating the question."
            ),
            "input_fields": [_field("question", FieldType.STR, "The question to answer.")],
            "output_fields": [
                _field("answer", FieldType.STR, "A short, direct answer, usually a few words.")
            ],
            "module_kind": ModuleKind.PREDICT,
            # A few words need a few tokens; a small model that loops instead (digits, the
            # same phrase) is cut off here rather than after seconds of output.
            "lm_defaults": {"temperature": 0.0, "max_tokens": 32},
        },
    },
    {
        "name": "qa_with_context",
        "description": (
            "Question answering grounded in supplied context, e.g. retrieved passages (RAG). "
            "Inputs: `context` (str), `question` (str). Output: `answer` (str). The answer "
            "uses only the context and says so when the context does not contain it."
        ),
        "tags": ["qa", "rag", "grounded"],
        "spec": {
            "instructions": (
                "Answer the question using only the information in the context. If the "
                "context does not contain the answer, reply exactly: I don't know."
            ),
            "input_fields": [
                _field("context", FieldType.STR, "Passages that may contain the answer."),
                _field("question", FieldType.STR, "The question to answer from the context."),
            ],
            "output_fields": [
                _field(
                    "answer",
                    FieldType.STR,
                    "A short answer supported by the context, or `I don't know`.",
                )
            ],
            "module_kind": ModuleKind.PREDICT,
            "lm_defaults": {"temperature": 0.0, "max_tokens": 256},
        },
    },
    {
        "name": "summarize",
        "description": (
            "Summarisation of a text to a length budget. Inputs: `text` (str), `max_words` "
            "(int, the upper bound on the summary's length). Output: `summary` (str)."
        ),
        "tags": ["summarization", "text"],
        "spec": {
            "instructions": (
                "Summarise the text faithfully in at most `max_words` words. Keep the main "
                "points and any figures that matter; add nothing that is not in the text."
            ),
            "input_fields": [
                _field("text", FieldType.STR, "The text to summarise."),
                _field("max_words", FieldType.INT, "Upper bound on the summary's word count."),
            ],
            "output_fields": [
                _field("summary", FieldType.STR, "The summary, in the text's language.")
            ],
            "module_kind": ModuleKind.PREDICT,
            "lm_defaults": {"temperature": 0.2, "max_tokens": 512},
        },
    },
    {
        "name": "classify_topic",
        "description": (
            "Classification of a text into one of a fixed set of topics (a Literal output). "
            "Input: `text` (str). Output: `topic`, one of business, politics, science, "
            "technology, health, sports, entertainment, other. To use other labels, add a "
            "version with different choices."
        ),
        "tags": ["classification", "text"],
        "spec": {
            "instructions": (
                "Classify the text into the single topic that fits it best. Use `other` only "
                "when none of the named topics applies."
            ),
            "input_fields": [_field("text", FieldType.STR, "The text to classify.")],
            "output_fields": [
                _field(
                    "topic",
                    FieldType.LITERAL,
                    "The topic label.",
                    choices=[
                        "business",
                        "politics",
                        "science",
                        "technology",
                        "health",
                        "sports",
                        "entertainment",
                        "other",
                    ],
                )
            ],
            "module_kind": ModuleKind.PREDICT,
            "lm_defaults": {"temperature": 0.0, "max_tokens": 32},
        },
    },
    {
        "name": "sentiment",
        "description": (
            "Sentiment of a text. Input: `text` (str). Output: `sentiment`, one of "
            "positive, negative, neutral (a Literal)."
        ),
        "tags": ["classification", "sentiment"],
        "spec": {
            "instructions": (
                "Decide the overall sentiment the author expresses in the text. Mixed or "
                "purely factual text is neutral."
            ),
            "input_fields": [_field("text", FieldType.STR, "The text to judge.")],
            "output_fields": [
                _field(
                    "sentiment",
                    FieldType.LITERAL,
                    "The overall sentiment.",
                    choices=["positive", "negative", "neutral"],
                )
            ],
            "module_kind": ModuleKind.PREDICT,
            "lm_defaults": {"temperature": 0.0, "max_tokens": 16},
        },
    },
    {
        "name": "extract_entities",
        "description": (
            "Named-entity extraction. Input: `text` (str). Output: `entities` (list[str]): the "
            "people, organisations, places, products and events the text names, each once, "
            "in order of first mention."
        ),
        "tags": ["extraction", "entities"],
        "spec": {
            "instructions": (
                "List every named entity in the text (people, organisations, places, products, "
                "events), each once, spelled as in the text, in order of first mention."
            ),
            "input_fields": [_field("text", FieldType.STR, "The text to read.")],
            "output_fields": [
                _field("entities", FieldType.LIST_STR, "The entities; empty if there are none.")
            ],
            "module_kind": ModuleKind.PREDICT,
            "lm_defaults": {"temperature": 0.0, "max_tokens": 256},
        },
    },
    {
        "name": "extract_facts",
        "description": (
            "Fact extraction. Input: `text` (str). Output: `facts` (list[str]): short, "
            "self-contained factual statements the text asserts, one claim each."
        ),
        "tags": ["extraction", "facts"],
        "spec": {
            "instructions": (
                "Extract the factual claims the text makes as short, self-contained "
                "statements, one claim per item. Resolve pronouns; leave out opinions."
            ),
            "input_fields": [_field("text", FieldType.STR, "The text to read.")],
            "output_fields": [
                _field(
                    "facts",
                    FieldType.LIST_STR,
                    "One statement per fact, each understandable on its own.",
                )
            ],
            "module_kind": ModuleKind.PREDICT,
            "lm_defaults": {"temperature": 0.0, "max_tokens": 512},
        },
    },
    {
        "name": "extract_fields",
        "description": (
            "Structured extraction of named values. Inputs: `text` (str), `field_names` "
            '(list[str], the keys wanted, e.g. ["invoice_number", "total"]). Output: '
            "`values` (dict) mapping each requested key to its value, or null when absent."
        ),
        "tags": ["extraction", "structured"],
        "spec": {
            "instructions": (
                "Read the text and return an object with exactly the requested keys. Each value "
                "is taken from the text; use null when the text does not state it."
            ),
            "input_fields": [
                _field("text", FieldType.STR, "The document to read."),
                _field("field_names", FieldType.LIST_STR, "The keys to extract."),
            ],
            "output_fields": [
                _field("values", FieldType.DICT, "The requested keys and their values.")
            ],
            "module_kind": ModuleKind.PREDICT,
            "lm_defaults": {"temperature": 0.0, "max_tokens": 512},
        },
    },
    {
        "name": "translate",
        "description": (
            "Translation. Inputs: `text` (str), `target_language` (str, e.g. `French` or "
            "`pt-BR`). Output: `translation` (str), the text in the target language with its "
            "meaning, tone and formatting kept."
        ),
        "tags": ["translation", "text"],
        "spec": {
            "instructions": (
                "Translate the text into the target language. Keep the meaning, tone, names "
                "and formatting; output only the translation."
            ),
            "input_fields": [
                _field("text", FieldType.STR, "The text to translate, in any language."),
                _field(
                    "target_language",
                    FieldType.STR,
                    "The language to translate into, by name or code.",
                ),
            ],
            "output_fields": [_field("translation", FieldType.STR, "The translated text.")],
            "module_kind": ModuleKind.PREDICT,
            "lm_defaults": {"temperature": 0.2, "max_tokens": 1024},
        },
    },
    {
        "name": "math_word_problem",
        "description": (
            "Arithmetic word problems, solved step by step (ChainOfThought adds a `reasoning` "
            "output before the answer). Input: `problem` (str). Output: `answer` (float), the "
            "final numeric result."
        ),
        "tags": ["math", "reasoning"],
        "spec": {
            "instructions": (
                "Solve the math word problem. Work through it step by step, then give the "
                "final numeric answer as a number without units."
            ),
            "input_fields": [_field("problem", FieldType.STR, "The word problem to solve.")],
            "output_fields": [
                _field("answer", FieldType.FLOAT, "The final numeric answer, without units.")
            ],
            "module_kind": ModuleKind.CHAIN_OF_THOUGHT,
            "lm_defaults": {"temperature": 0.0, "max_tokens": 512},
        },
    },
    {
        "name": "verify_claim",
        "description": (
            "Fact checking against evidence, reasoning first (ChainOfThought). Inputs: "
            "`claim` (str), `evidence` (str). Output: `supported` (bool): true only when the "
            "evidence supports the claim."
        ),
        "tags": ["verification", "reasoning", "grounded"],
        "spec": {
            "instructions": (
                "Decide whether the evidence supports the claim. Answer true only if the "
                "evidence states or directly implies it; contradicted or unaddressed claims "
                "are false."
            ),
            "input_fields": [
                _field("claim", FieldType.STR, "The statement to check."),
                _field("evidence", FieldType.STR, "The text to check it against."),
            ],
            "output_fields": [
                _field("supported", FieldType.BOOL, "Whether the evidence supports the claim.")
            ],
            "module_kind": ModuleKind.CHAIN_OF_THOUGHT,
            "lm_defaults": {"temperature": 0.0, "max_tokens": 512},
        },
    },
]
