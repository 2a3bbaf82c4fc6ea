"""A real Prometheus (Debian's package) on loopback, loaded with voltrace's rules."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.net import free_port
from tests.support.polling import poll

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
DASHBOARD = DASHBOARDS / "grafana" / "voltrace.json"
ALERTS = DASHBOARDS / "alerts.yml"
JOB = "voltrace"
# Grafana's variables, as a user with a 1 s scrape interval would get them.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "1s", "__range": "5m", "job": JOB}


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen

    def api(self, path: str, **params: Any) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                body = json.load(answer)
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{path} {params}: {error.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.api("query", query=expr)
        assert data["resultType"] in ("vector", "scalar"), data
        return (
            data["result"]
            if data["resultType"] == "vector"
            else [{"metric": {}, "value": data["result"]}]
        )


def substitute(expr: str) -> str:
    """Replace Grafana's $variables the way Grafana would before querying Prometheus."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: GRAFANA_VARIABLES[m.group(1)], expr)


def dashboard_targets() -> list[tuple[str, dict]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [
        (panel["title"], target)
        for panel in panels
        if panel["type"] != "row"
        for target in panel.get("targets", [])
    ]


@contextmanager
def running_prometheus(tmp: Path, targets: list[str]) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` every second, voltrace's alerts firing on first match."""
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "0s"  # fire on the first evaluation; promtool tests the real `for`
    (tmp / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    config = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(tmp / "alerts.yml")]
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
    job["static_configs"][0]["targets"] = targets
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    with (tmp / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--enable-feature=exemplar-storage",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, (tmp / "prometheus.log").read_text()
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    try:
        poll(ready, 60, "Prometheus to be ready")
        yield Prometheus(url, process)
    finally:
        process.terminate()
        process.wait(timeout=20)
