"""Signature specs the tests register (through `SignatureVersionFactory` or the registry's
services), with inputs valid for them."""

# question: str -> answer: str
QA_SPEC = {
    "instructions": "Answer the question.",
    "input_fields": [{"name": "question", "type": "str", "description": "The question."}],
    "output_fields": [{"name": "answer", "type": "str", "description": "The answer."}],
    "module_kind": "Predict",
}

# question: str, level: int -> answer: str (a typed input, for the input-validation tests)
QA_LEVEL_SPEC = {
    "instructions": "Answer the question.",
    "input_fields": [
        {"name": "question", "type": "str", "description": "The question."},
        {"name": "level", "type": "int", "description": "How detailed."},
    ],
    "output_fields": [{"name": "answer", "type": "str", "description": "The answer."}],
    "module_kind": "Predict",
}
QA_LEVEL_INPUTS = {"question": "What is the capital of France?", "level": 1}
