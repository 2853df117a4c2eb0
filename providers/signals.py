"""Warm-up of local models in the inference workers.

A worker of an inference cluster (`Q_INFERENCE_CLUSTERS`) loads the model of every enabled
`mlx` provider that its cluster serves (`provider_route`) as soon as it starts, in a background
thread, so the first execution after a start or a recycle does not wait for the load (about
3 s for the default model on a 2-core CPU). The worker takes tasks meanwhile: a task for a
model still loading waits for that same load. The models other clusters serve are never loaded
here: a CPU machine must not load the model meant for another machine's accelerator.
"""

import logging
import threading

from django.conf import settings
from django.db import connection
from django.dispatch import receiver
from django_q.conf import Conf
from django_q.signals import post_spawn

from providers.calls import providers_routed_to
from providers.lms import provider_warm_up
from providers.selectors import provider_list

logger = logging.getLogger(__name__)


@receiver(post_spawn, dispatch_uid="providers.warm_up_local_models")
def warm_up_local_models_on_spawn(sender, proc_name: str, **kwargs) -> None:
    cluster = Conf.CLUSTER_NAME
    if cluster not in settings.Q_INFERENCE_CLUSTERS or not settings.PROVIDERS_WARM_UP_LOCAL_MODELS:
        return
    threading.Thread(
        target=warm_up_local_models, kwargs={"cluster": cluster}, name="model-warm-up", daemon=True
    ).start()


def warm_up_local_models(*, cluster: str | None = None) -> None:
    """Load the models `cluster` serves (default: the first inference cluster)."""
    served = providers_routed_to(cluster=cluster or settings.Q_INFERENCE_CLUSTER)
    try:
        for provider in provider_list(enabled=True).filter(served):
            try:
                seconds = provider_warm_up(provider=provider)
            except Exception:
                # A broken model directory fails that provider's executions with a clear
                # error later; it must not take the worker down now.
                logger.exception("Could not warm up the model of provider %r", provider.name)
                continue
            logger.info("Warmed up the model of provider %r in %.1f s", provider.name, seconds)
    finally:
        connection.close()
