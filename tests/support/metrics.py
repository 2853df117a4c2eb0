"""Reading a `/metrics` page the way Prometheus does, to check values rather than names."""

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """The samples of one `/metrics` page, looked up by sample name and labels."""

    def __init__(self, text: str) -> None:
        self.samples: dict[tuple[str, frozenset], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when the page has no such series (nothing counted yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples

    def series(self, name: str) -> list[dict[str, str]]:
        """The label sets of every sample named `name`."""
        return [dict(labels) for sample, labels in self.samples if sample == name]


def scrape_client(client) -> Scrape:
    """`/metrics` through a Django test client (which comes from 127.0.0.1)."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    return Scrape(response.content.decode())


def scrape_url(url: str, *, token: str | None = None) -> Scrape:
    """`/metrics` of a running server."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (local URL)
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (local URL)
        return Scrape(response.read().decode())
