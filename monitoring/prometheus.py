"""The toolkit's own Prometheus metrics, written by the process where the event happens.

Under `manage.py serve` every process has `PROMETHEUS_MULTIPROC_DIR` in its environment before
it imports prometheus_client, so each writes its values to files there and `/metrics` in any
web worker adds up those of every process (gunicorn and django-q2 workers alike). Without it
(`runserver`, the tests) they stay in the process's own registry.

Label values are server-side names only: signature names and version numbers, provider names,
statuses, causes and error codes the toolkit itself writes, model directory names. Nothing a
request sends becomes a label, so the number of series stays bounded.

What only the database knows (breaker states, queue depths) is read when scraped, by
`monitoring.collectors`, not kept here.
"""

from prometheus_client import Counter, Gauge, Histogram

NAMESPACE = "dspy_toolkit"

# From 1 ms (an echo engine) to 120 s (a long local generation).
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)
MODEL_LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# `provider` on an execution's metrics is the provider that answered, or the requested one
# when none did.
EXECUTION_LABELS = ("signature", "version", "provider")

executions_total = Counter(
    "executions",
    "Executions that reached a final status.",
    [*EXECUTION_LABELS, "status", "cause"],
    namespace=NAMESPACE,
)
execution_duration_seconds = Histogram(
    "execution_duration_seconds",
    "Time from an execution's claim by a worker to its final status.",
    [*EXECUTION_LABELS, "status"],
    namespace=NAMESPACE,
    buckets=DURATION_BUCKETS,
)
execution_queue_wait_seconds = Histogram(
    "execution_queue_wait_seconds",
    "Time an execution waited in the queue before a worker claimed it.",
    EXECUTION_LABELS,
    namespace=NAMESPACE,
    buckets=DURATION_BUCKETS,
)
tokens_total = Counter(
    "tokens",
    "Tokens of finished executions: direction is input (the prompt) or output.",
    [*EXECUTION_LABELS, "direction"],
    namespace=NAMESPACE,
)
fallback_hops_total = Counter(
    "fallback_hops",
    "Providers tried after the requested one, summed over finished executions.",
    ["signature", "version", "requested_provider"],
    namespace=NAMESPACE,
)
# `provider` on an attempt is the provider called; for a pool's call, the member that served
# it, and `pool` the pool ("" outside a pool), so a pool's traffic splits by member.
provider_attempts_total = Counter(
    "provider_attempts",
    "Provider calls made for executions (and calls a breaker refused): outcome is succeeded, "
    "failed or rejected.",
    ["signature", "version", "provider", "pool", "outcome", "error_code"],
    namespace=NAMESPACE,
)
provider_attempt_duration_seconds = Histogram(
    "provider_attempt_duration_seconds",
    "Duration of one provider call made for an execution.",
    ["provider", "pool", "outcome"],
    namespace=NAMESPACE,
    buckets=DURATION_BUCKETS,
)
breaker_transitions_total = Counter(
    "breaker_transitions",
    "State changes of the providers' circuit breakers.",
    ["provider", "from_state", "to_state"],
    namespace=NAMESPACE,
)
model_load_seconds = Histogram(
    "model_load_seconds",
    "Time to load a local model into a worker process.",
    ["model"],
    namespace=NAMESPACE,
    buckets=MODEL_LOAD_BUCKETS,
)
# Summed over the live processes holding the model: two inference workers that loaded it hold
# it twice. A process that died stops counting (see `monitoring.collectors`).
model_resident_bytes = Gauge(
    "model_resident_bytes",
    "Bytes of a local model's weights held in memory, over every live process that loaded it.",
    ["model"],
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
# The OpenAI-compatible chat route (issue 13): `provider` is the provider that answered, or the
# requested one when none did; outcome is succeeded, failed or refused (every breaker open).
chat_completions_total = Counter(
    "chat_completions",
    "Chat completions of the OpenAI-compatible route that answered or failed.",
    ["provider", "outcome", "error_code"],
    namespace=NAMESPACE,
)
chat_completion_duration_seconds = Histogram(
    "chat_completion_duration_seconds",
    "Time a chat completion of the OpenAI-compatible route took, fallbacks included.",
    ["provider", "outcome"],
    namespace=NAMESPACE,
    buckets=DURATION_BUCKETS,
)
chat_tokens_total = Counter(
    "chat_tokens",
    "Tokens of chat completions: direction is input (the prompt) or output.",
    ["provider", "direction"],
    namespace=NAMESPACE,
)
