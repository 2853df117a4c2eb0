"""Settings shared by every environment. Values from the environment come through core.env."""

import re

from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured

from core import env

BASE_DIR = env.BASE_DIR
VAR_DIR = env.var_dir()

SECRET_KEY = env.get("DJANGO_SECRET_KEY", "insecure-development-key-never-use-in-production")
DEBUG = env.get_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env.get_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.get_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    # django.contrib.admin, with the console's dashboard on its index (monitoring.sites).
    "monitoring.apps.ConsoleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "django_prometheus",
    "config",
    "core",
    "registry",
    "providers",
    "executions",
    "evaluations",
    "monitoring",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "core.api.middleware.ApiErrorsMiddleware",
    "core.api.middleware.ApiRequestGuardMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

# Content-Security-Policy on every response (django-csp): nothing from another host. Scripts
# are the site's own files, plus inline ones that carry the response's nonce (the ReDoc page's
# start-up script). Styles may be inline: the admin's templates and ReDoc's and Swagger UI's
# bundles write style elements at run time.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, UNSAFE_INLINE],
        "img-src": [SELF, "data:", "blob:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF],
        "worker-src": [SELF, "blob:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# A shared cache (not local memory) so rate limits and django-q2 cluster stats hold across
# the web and worker processes: Redis when configured, else a table in the database.
REDIS_URL = env.get("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "core.cache.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {
        "default": {
            # Django's backends, counting their reads for /metrics (core/cache.py).
            "BACKEND": "core.cache.DatabaseCache",
            "LOCATION": "dspy_toolkit_cache",
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGIN_URL = "admin:login"

REST_FRAMEWORK = {
    # API keys for clients; browser sessions for staff users (the interactive docs, the admin).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.api.authentication.APIKeyAuthentication",
        "core.api.authentication.StaffSessionAuthentication",
    ],
    # Limits per API key (or per staff user) across every process, kept in the shared cache.
    "DEFAULT_THROTTLE_CLASSES": ["core.api.throttling.ClientRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "api_key": env.get("API_KEY_RATE_LIMIT", "600/min"),
        "user": env.get("API_USER_RATE_LIMIT", "1200/min"),
    },
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON only: bodies of any other media type get a 415 (their size is the middleware's).
    "DEFAULT_PARSER_CLASSES": ["core.api.parsers.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    # Every error of every endpoint in one shape (core.api.errors), a lost database connection
    # included (a 503 with Retry-After, core.db).
    "EXCEPTION_HANDLER": "core.api.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "core.api.schema.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.LimitOffsetPagination",
    # OPTIONS would describe each endpoint a second way (and could fail doing it): the OpenAPI
    # schema at /api/schema/ is the one description, so OPTIONS is a 405.
    "DEFAULT_METADATA_CLASS": None,
    "PAGE_SIZE": 50,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "DSPy Toolkit API",
    "DESCRIPTION": (
        "Registry of versioned DSPy signatures, provider configuration, and execution of "
        "registered signatures on local MLX models or remote OpenAI-compatible endpoints."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Group operations by resource (signatures, providers, executions) rather than "api".
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Swagger UI and Redoc served from this installation, not a CDN: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No request leaves for another host either: Swagger UI's online validator is off, ReDoc
    # uses system fonts (templates/drf_spectacular/ drops drf-spectacular's Google Fonts), and
    # the Content-Security-Policy forbids images and fonts from other hosts.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "REDOC_UI_SETTINGS": {
        "theme": {
            "typography": {
                "fontFamily": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
                "headings": {"fontFamily": "system-ui, -apple-system, 'Segoe UI', sans-serif"},
                "code": {"fontFamily": "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace"},
            }
        }
    },
    "COMPONENT_SPLIT_REQUEST": True,
    # One schema name for a choice set used by several fields (a breaker's states).
    "ENUM_NAME_OVERRIDES": {
        "BreakerStateEnum": "providers.choices.BreakerState",
        "DatasetSplitEnum": "registry.models.DatasetSplit",
        "RunStatusEnum": "evaluations.models.RunStatus",
        "OptimizerEnum": "evaluations.models.Optimizer",
        "ExecutionStatusEnum": "executions.models.ExecutionStatus",
    },
}

# django-q2. The library's defaults duplicate or lose work (timeout >= retry runs a task twice,
# max_attempts=0 retries forever, failed tasks stay locked without ack_failures), so each of
# these is set on purpose. Attempts are counted in the project's own rows (a force-killed
# worker is never recorded by django-q2), so the broker itself never retries.
# The django-q2 clusters (queues) for local model inference, each an ALT_CLUSTERS entry with
# the inference settings below, which a worker machine picks with `Q_CLUSTER_NAME`. A local
# provider names the one whose workers load its model and run its executions
# (`Provider.serving_cluster`); the first one serves those that name none. Every machine must
# be given the same list: the web processes route by it and the workers warm up by it.
# Cross-process wake-ups (`core.notify`): a sync request learns its execution finished, and an
# idle cluster that a task arrived, the moment it is committed. auto: PostgreSQL's
# LISTEN/NOTIFY when the database is PostgreSQL, else Redis pub/sub when REDIS_URL is set, else
# datagrams between the local processes (the embedded SQLite default); off: polling.
NOTIFY_BACKEND = env.get("NOTIFY_BACKEND", "auto")
# With notifications, how often an idle ORM-broker cluster looks at its queue anyway: for a
# task whose lock expired (pulled by a cluster that died) and a notification that was lost.
Q_IDLE_LOOK_S = env.get_float("Q_IDLE_LOOK_S", 1.0)
# Successful django-q2 tasks kept for the admin's "Delivered tasks" page (the newest).
Q_SUCCESSES_KEPT = env.get_int("Q_SUCCESSES_KEPT", 1000)
if NOTIFY_BACKEND not in ("auto", "postgres", "redis", "local", "off"):
    raise ImproperlyConfigured(
        f"NOTIFY_BACKEND must be one of auto, postgres, redis, local, off: got {NOTIFY_BACKEND!r}."
    )

Q_INFERENCE_CLUSTERS = env.get_list("Q_INFERENCE_CLUSTERS", ["inference"])
if (
    not Q_INFERENCE_CLUSTERS
    # The task cluster's names: django-q2's, and the ones `manage.py serve --clusters` knows.
    or {"default", "tasks", "none"} & set(Q_INFERENCE_CLUSTERS)
    or len(set(Q_INFERENCE_CLUSTERS)) != len(Q_INFERENCE_CLUSTERS)
    or not all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", n) for n in Q_INFERENCE_CLUSTERS)
):
    raise ImproperlyConfigured(
        "Q_INFERENCE_CLUSTERS must list distinct cluster names (letters, digits, '.', '_', '-'), "
        f"none of them 'default', 'tasks' or 'none': got {Q_INFERENCE_CLUSTERS!r}."
    )
Q_INFERENCE_CLUSTER = Q_INFERENCE_CLUSTERS[0]
Q_CLUSTER = {
    "name": "default",
    "workers": env.get_int("Q_WORKERS", 2),
    "timeout": env.get_int("Q_TIMEOUT", 300),
    "retry": env.get_int("Q_TIMEOUT", 300) + 60,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    # How long an idle ORM-broker cluster sleeps between looks at its queue when notifications
    # are off (NOTIFY_BACKEND): with them, the pusher waits for the enqueue's notification
    # (`executions.broker.NotifiedORM`). The Redis broker blocks instead and never polls.
    "poll": 0.05,
    # No pruning when a task is saved: django-q2 prunes by locking every kept row on each save
    # (a thousand rows per task). The reaper's schedule keeps the newest Q_SUCCESSES_KEPT.
    "save_limit": 0,
    # A worker process is replaced after this many tasks; a new one imports DSPy again
    # (seconds of CPU), so not often.
    "recycle": 10_000,
    "queue_limit": 50,
    "label": "Task queue",
    "ALT_CLUSTERS": {
        # Local model inference: one worker by default so a model is loaded once per worker
        # process (lazily, after the fork), never per task.
        name: {
            "workers": env.get_int("Q_INFERENCE_WORKERS", 1),
            "timeout": env.get_int("Q_INFERENCE_TIMEOUT", 600),
            "retry": env.get_int("Q_INFERENCE_TIMEOUT", 600) + 60,
            "recycle": 10_000,
        }
        for name in Q_INFERENCE_CLUSTERS
    },
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["broker_class"] = "executions.broker.NotifiedORM"
Q_CLUSTER["sync"] = env.get_bool("Q_SYNC", False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"},
    },
    # Upstream error text may echo a provider's key: every record is scrubbed (core.secrets).
    "filters": {"scrub_secrets": {"()": "core.secrets.ScrubSecretsFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["scrub_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": env.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "LiteLLM": {"level": "WARNING"},
    },
}

# Who may scrape /metrics: these client addresses, or a request with this bearer token.
METRICS_ALLOWED_ADDRESSES = env.get_list("METRICS_ALLOWED_ADDRESSES", ["127.0.0.1", "::1"])
METRICS_BEARER_TOKEN = env.get("METRICS_BEARER_TOKEN")

# The largest request body any API endpoint accepts (413 above it).
API_MAX_BODY_BYTES = env.get_int("API_MAX_BODY_BYTES", 256 * 1024)
# The deepest nesting of objects and lists a request body may have (400 beyond it).
API_MAX_JSON_DEPTH = env.get_int("API_MAX_JSON_DEPTH", 32)

# Executions (read at call time through django.conf.settings).
EXECUTIONS_DEFAULT_SYNC_TIMEOUT_S = env.get_float("EXECUTIONS_DEFAULT_SYNC_TIMEOUT_S", 30.0)
EXECUTIONS_MAX_TIMEOUT_S = env.get_float("EXECUTIONS_MAX_TIMEOUT_S", 300.0)
EXECUTIONS_BATCH_MAX_ITEMS = env.get_int("EXECUTIONS_BATCH_MAX_ITEMS", 32)
# Load shedding: executions waiting per cluster (503 beyond) and per client (429 beyond).
EXECUTIONS_MAX_QUEUED = env.get_int("EXECUTIONS_MAX_QUEUED", 1000)
EXECUTIONS_MAX_QUEUED_PER_CLIENT = env.get_int("EXECUTIONS_MAX_QUEUED_PER_CLIENT", 200)
EXECUTIONS_MAX_TOKENS_LIMIT = env.get_int("EXECUTIONS_MAX_TOKENS_LIMIT", 4096)
# A running execution's worker writes a heartbeat this often; the reaper treats a row whose
# heartbeat is older than the stale threshold as abandoned (the worker died).
EXECUTIONS_HEARTBEAT_S = env.get_float("EXECUTIONS_HEARTBEAT_S", 5.0)
EXECUTIONS_STALE_AFTER_S = env.get_float("EXECUTIONS_STALE_AFTER_S", 60.0)
EXECUTIONS_MAX_RUN_ATTEMPTS = env.get_int("EXECUTIONS_MAX_RUN_ATTEMPTS", 2)
EXECUTIONS_REAPER_EVERY_MINUTES = env.get_int("EXECUTIONS_REAPER_EVERY_MINUTES", 1)

# Evaluation and optimization runs: how long one task may run (an optimization can take an
# hour on the CPU; django-q2 kills the worker after it), and how many examples an evaluation
# sends at once (local models batch them, see providers.mlx.runtime).
EVALUATIONS_RUN_TIMEOUT_S = env.get_int("EVALUATIONS_RUN_TIMEOUT_S", 3600)
EVALUATIONS_CONCURRENCY = env.get_int("EVALUATIONS_CONCURRENCY", 8)
# Modules (and their submodules) whose functions may be named as custom metrics by dotted path.
EVALUATIONS_CUSTOM_METRIC_MODULES = env.get_list("EVALUATIONS_CUSTOM_METRIC_MODULES", [])

# Providers. How many queued calls of one local model a single inference worker runs at once,
# so that they reach the runtime's batched generation together.
PROVIDERS_LOCAL_CONCURRENCY = env.get_int("PROVIDERS_LOCAL_CONCURRENCY", 8)
# Inference workers load the enabled local models when they start, not on the first request.
PROVIDERS_WARM_UP_LOCAL_MODELS = env.get_bool("PROVIDERS_WARM_UP_LOCAL_MODELS", True)
# Which environment variables a provider's `api_key_env` may name: those matching this regular
# expression (in full), and those listed (comma-separated). The key's value is sent to the
# provider's endpoint, so the toolkit's own variables are refused whatever these say.
PROVIDERS_KEY_ENV_PATTERN = env.get(
    "PROVIDERS_KEY_ENV_PATTERN", r"^DSPY_TOOLKIT_PROVIDER_KEY_[A-Z0-9_]+$"
)
PROVIDERS_KEY_ENV_ALLOWED = env.get_list("PROVIDERS_KEY_ENV_ALLOWED")

# Monitoring and retention (issue 9, operations). Each service process reports itself this
# often; one silent for longer counts as gone (and readiness wants a worker of each cluster
# younger than that). Finished executions older than the retention (days; 0 keeps them) are
# deleted daily, this many a transaction.
MONITORING_PROCESS_HEARTBEAT_S = env.get_float("MONITORING_PROCESS_HEARTBEAT_S", 10.0)
MONITORING_PROCESS_STALE_AFTER_S = env.get_float("MONITORING_PROCESS_STALE_AFTER_S", 60.0)
EXECUTIONS_RETENTION_DAYS = env.get_int("EXECUTIONS_RETENTION_DAYS", 30)
EXECUTIONS_PRUNE_BATCH_SIZE = env.get_int("EXECUTIONS_PRUNE_BATCH_SIZE", 500)

# Failure log and re-runs (issue 9). Whether the failure log shows an execution's inputs and
# keeps the prompts of its failed calls (which quote them); off: "[redacted]" instead.
EXECUTIONS_FAILURE_LOG_INPUTS = env.get_bool("EXECUTIONS_FAILURE_LOG_INPUTS", True)

# Provider health (issue 9, live provider health). The call figures of a provider's health
# (API, admin) cover the attempts of the last this many seconds, at most this many of the
# most recent per provider.
MONITORING_PROVIDER_HEALTH_WINDOW_S = env.get_float("MONITORING_PROVIDER_HEALTH_WINDOW_S", 3600.0)
MONITORING_PROVIDER_HEALTH_MAX_CALLS = env.get_int("MONITORING_PROVIDER_HEALTH_MAX_CALLS", 1000)

# Prometheus (issue 9, metrics). `manage.py serve` gives every process it starts this directory
# as PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode: each process writes its
# metrics to files there, and /metrics adds them up) and empties it when it starts. A process
# started otherwise (runserver, the tests) keeps its metrics to itself unless the variable is
# set in its environment.
METRICS_MULTIPROC_DIR = env.get("PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "prometheus"))

# Provider pools (issue 13, pools). A call in progress on a pool's member counts towards its
# outstanding requests for at most this many seconds: long enough for any call (a task is
# killed sooner), so only a lease whose process died mid-call stops counting this way.
PROVIDERS_POOL_LEASE_S = env.get_float("PROVIDERS_POOL_LEASE_S", 900.0)

# The OpenAI-compatible chat route (issue 13, openai). A chat completion on a local model runs
# in the inference cluster; the web process waits for it the provider's timeout plus this many
# seconds for a free worker, then answers 504 (the queued call still runs when one is free).
PROVIDERS_CHAT_QUEUE_WAIT_S = env.get_float("PROVIDERS_CHAT_QUEUE_WAIT_S", 30.0)
