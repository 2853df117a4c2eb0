"""What monitoring records of the service itself (its processes)."""

from django.db import models
from django.db.models import Q


class ProcessRole(models.TextChoices):
    WEB = "web", "Web worker"
    CLUSTER = "cluster", "django-q2 cluster"
    WORKER = "worker", "django-q2 worker"


class ServiceProcess(models.Model):
    """One process of the service (a gunicorn worker, a qcluster, a django-q2 worker), as it
    last reported itself. Each process upserts its own row from one background thread
    (`monitoring.processes`); a row whose heartbeat stops is a process that is gone."""

    Role = ProcessRole

    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    role = models.CharField(max_length=16, choices=Role.choices)
    # The django-q2 cluster (its Q_CLUSTER_NAME) of a cluster or worker; blank for the web.
    cluster = models.CharField(max_length=64, blank=True)
    heartbeat_at = models.DateTimeField(db_index=True)
    rss_bytes = models.PositiveBigIntegerField("resident memory (bytes)", null=True, blank=True)
    loaded_models = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["role", "cluster", "host", "pid"]
        verbose_name = "service process"
        verbose_name_plural = "resources (service processes)"
        constraints = [
            # A pid is reused once its process is gone: the start time tells the two apart.
            models.UniqueConstraint(
                fields=["host", "pid", "started_at"], name="service_process_unique"
            ),
            models.CheckConstraint(
                condition=Q(role__in=ProcessRole.values), name="service_process_role_known"
            ),
            # A web process belongs to no cluster; a cluster's processes name theirs.
            models.CheckConstraint(
                condition=Q(role=ProcessRole.WEB, cluster="")
                | (~Q(role=ProcessRole.WEB) & ~Q(cluster="")),
                name="service_process_cluster_matches_role",
            ),
        ]

    def __str__(self) -> str:
        where = f" {self.cluster}" if self.cluster else ""
        return f"{self.get_role_display()}{where} {self.pid}@{self.host}"
