"""Services of the executions app, one module a role (no re-exports: import from the module):
`create` (validate, write, enqueue on commit; batches), `queue`, `runs` (claim, run with
breakers and fallback), `cancel` and `reaper` (executions whose worker died).

An execution row always exists before its task is enqueued (`transaction.on_commit`), tasks
carry only ids, and every status change is a guarded update on the status it expects (plus the
claim number for a running row), so a task delivered twice, a late worker or a reaper racing a
worker can never run an execution twice or overwrite a newer outcome.

A lost database connection (`core.db`) is retried on a new one: each write can tell whether an
earlier try went through (the row's id chosen before its insert, the claim's `started_at`, the
finish's `finished_at`, an attempt's unique position), so a request answers with the execution
it wrote and a worker records the outcome of a provider call it made, never making it again.
"""
