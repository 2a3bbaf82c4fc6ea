"""dashboards/: the Grafana dashboard against Grafana 11.6's schema, and the files around it.

The schema is the one ``grafana-foundation-sdk==1769699379!11.6.0`` generates its models
from: the dashboard must survive a parse/serialise round trip through those models
without losing a key, and every value must have the type the model declares (enums,
numbers, nested objects; panel options and field config through the panel plugin's
own model, queries through the Prometheus dataquery model). What the queries return
is tested against a real Prometheus in test_prometheus.py.
"""

from __future__ import annotations

import enum
import json
import re
import types
import typing
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import prometheus as prometheus_model
from grafana_foundation_sdk.models.dashboard import Dashboard, Panel, RowPanel

from voltrace import semconv
from voltrace.cinder_sim import Fault

REPO = Path(__file__).resolve().parents[1]
DASHBOARDS = REPO / "dashboards"
DASHBOARD = DASHBOARDS / "grafana" / "voltrace.json"
COMPOSE = DASHBOARDS / "docker-compose.yml"
DOCS = REPO / "docs" / "metrics.md"

plugins.register_default_plugins()


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return [p for p in load_dashboard()["panels"] if p["type"] != "row"]


def variables() -> dict[str, dict]:
    return {v["name"]: v for v in load_dashboard()["templating"]["list"]}


# -- schema validation through the SDK's models --------------------------------


def lost_keys(original: Any, round_tripped: Any, path: str = "$") -> list[str]:
    """Keys (or values) of ``original`` that the round trip dropped or changed."""
    if isinstance(original, dict):
        if not isinstance(round_tripped, dict):
            return [f"{path}: became {round_tripped!r}"]
        return [
            lost
            for key, value in original.items()
            for lost in (
                [f"{path}.{key}: not in the schema"]
                if key not in round_tripped
                else lost_keys(value, round_tripped[key], f"{path}.{key}")
            )
        ]
    if isinstance(original, list):
        if not isinstance(round_tripped, list) or len(original) != len(round_tripped):
            return [f"{path}: list changed"]
        return [
            lost
            for i, (a, b) in enumerate(zip(original, round_tripped, strict=True))
            for lost in lost_keys(a, b, f"{path}[{i}]")
        ]
    return [] if original == round_tripped else [f"{path}: {original!r} -> {round_tripped!r}"]


def type_errors(value: Any, hint: Any, path: str) -> list[str]:
    """Whether ``value`` fits the SDK model's type annotation ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any or hint is object:
        return model_errors(value, path)  # panel options, custom field config, queries
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return []
        options = [a for a in args if a is not type(None)]
        exact = [a for a in options if isinstance(a, type) and type(value) is a]
        if exact:
            return type_errors(value, exact[0], path)
        results = [type_errors(value, a, path) for a in options]
        return [] if any(not r for r in results) else results[0]
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: {value!r} not one of {args}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {value!r}"]
        return [e for i, v in enumerate(value) for e in type_errors(v, args[0], f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {value!r}"]
        return [e for k, v in value.items() for e in type_errors(v, args[1], f"{path}.{k}")]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        ok = isinstance(value, hint) or value in {m.value for m in hint}
        return [] if ok else [f"{path}: {value!r} is not a {hint.__name__}"]
    scalar = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(hint)
    if scalar is not None:
        ok = isinstance(value, scalar) and (hint is bool or not isinstance(value, bool))
        return [] if ok else [f"{path}: expected {hint.__name__}, got {value!r}"]
    if isinstance(hint, type):
        if isinstance(value, dict) and hasattr(hint, "from_json"):
            value = hint.from_json(value)  # the SDK keeps panel links and transformations raw
        if not isinstance(value, hint):
            return [f"{path}: expected {hint.__name__}, got {type(value).__name__}"]
        return model_errors(value, path)
    return [f"{path}: cannot check {hint!r}"]


def model_errors(model: Any, path: str) -> list[str]:
    if not type(model).__module__.startswith("grafana_foundation_sdk."):
        return []
    return [
        error
        for name, hint in typing.get_type_hints(type(model)).items()
        for error in type_errors(getattr(model, name), hint, f"{path}.{name}")
    ]


def test_dashboard_round_trips_through_grafana_11_6_models() -> None:
    """Every key of the dashboard is one Grafana 11.6's schema knows, at the right place."""
    raw = load_dashboard()
    model = Dashboard.from_json(raw)
    round_tripped = json.loads(json.dumps(model, cls=JSONEncoder))
    assert lost_keys(raw, round_tripped) == []


def test_dashboard_values_have_the_schema_types() -> None:
    """Enums, numbers and nested objects all have the types Grafana 11.6's models declare."""
    model = Dashboard.from_json(load_dashboard())
    assert model_errors(model, "dashboard") == []
    assert model.schema_version == Dashboard().schema_version  # 11.6's current version
    for panel in model.panels or []:
        assert isinstance(panel, Panel | RowPanel)
        for target in getattr(panel, "targets", None) or []:
            assert isinstance(target, prometheus_model.Dataquery), panel.title


def test_schema_check_catches_a_wrong_value() -> None:
    """The type check is real: a bad enum, a string width and an unknown key are all reported."""
    raw = load_dashboard()
    first = next(p for p in raw["panels"] if p["type"] == "timeseries")
    first["fieldConfig"]["defaults"]["custom"]["drawStyle"] = "sparkles"
    first["gridPos"]["w"] = "wide"
    first["colour"] = "red"
    errors = model_errors(Dashboard.from_json(raw), "dashboard")
    assert any("draw_style: 'sparkles'" in e for e in errors)
    assert any("grid_pos.w: expected int" in e for e in errors)
    round_tripped = json.loads(json.dumps(Dashboard.from_json(raw), cls=JSONEncoder))
    assert any("colour: not in the schema" in e for e in lost_keys(raw, round_tripped))


# -- what the dashboard shows --------------------------------------------------


def panel(title: str) -> dict:
    [found] = [p for p in panels() if p["title"] == title]
    return found


def exprs(title: str) -> list[str]:
    return [t["expr"] for t in panel(title)["targets"]]


def test_dashboard_has_the_panels_the_issue_lists() -> None:
    """Creates/s by outcome, error ratio, p50/p95/p99 per stage, failures, Cinder latency."""
    [by_outcome] = exprs("Creates per second by outcome")
    assert "sum by (outcome) (rate(voltrace_creates_total" in by_outcome
    assert panel("Error ratio")["fieldConfig"]["defaults"]["unit"] == "percentunit"
    assert all(
        'outcome="server_error"' in e or 'outcome="client_error"' in e for e in exprs("Error ratio")
    )
    for quantile, name in (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99")):
        [stage] = exprs(f"Stage latency {name}")
        assert stage.startswith(f"histogram_quantile({quantile}, sum by (stage, le)")
        assert f"histogram_quantile({quantile}, sum by (stage, le)" in " ".join(
            exprs("Stage latency per stage (time range)")
        )
        assert (
            f"histogram_quantile({quantile}, sum by (http_request_method, http_route, le)"
            in " ".join(exprs("Cinder call latency p50 / p95 / p99"))
        )
    [failures] = exprs("Which stage fails, by failure class")
    assert "sum by (failed_stage, failure_class, http_status)" in failures
    assert "voltrace_cinder_request_duration_seconds_bucket" in " ".join(
        exprs("Cinder call latency p50 / p95 / p99")
    )
    [in_flight] = exprs("Creates in flight per stage")
    assert in_flight.startswith("sum by (stage) (voltrace_stage_in_flight{")


def test_dashboard_shows_what_happens_after_nova_answers() -> None:
    """Issue 12: time from the 200 to available, async outcomes by class, volumes creating."""
    settle = exprs("Time from 200 to available / error p50 / p95 / p99")
    for quantile, expr in zip(("0.5", "0.95", "0.99"), settle, strict=True):
        assert expr.startswith(f"histogram_quantile({quantile}, sum by (outcome, le)")
        assert "voltrace_volume_settle_duration_seconds_bucket{" in expr
        assert 'outcome=~"available|error"' in expr  # stuck_creating's time is the timeout
    [per_second] = exprs("Async outcomes per second by class")
    assert per_second.startswith(
        "sum by (outcome, failure_class) (rate(voltrace_volume_async_outcomes_total{"
    )
    [by_class] = exprs("Async outcomes by class (time range)")
    assert "sum by (outcome, failure_class) (increase(voltrace_volume_async_outcomes_total{" in (
        by_class
    )
    [creating] = exprs("Volumes still creating (followed now)")
    assert creating.startswith("sum(voltrace_volumes_creating{")
    [dropped] = exprs("Follows dropped (time range)")
    assert "voltrace_volume_follows_dropped_total" in dropped and dropped.endswith("or vector(0)")
    [row] = [
        p
        for p in load_dashboard()["panels"]
        if p["type"] == "row" and "after" in p["title"].lower()
    ]
    below = [p for p in panels() if p["gridPos"]["y"] > row["gridPos"]["y"]]
    assert {p["title"] for p in below} == {
        "Time from 200 to available / error p50 / p95 / p99",
        "Async outcomes per second by class",
        "Async outcomes by class (time range)",
        "Volumes still creating (followed now)",
        "Follows dropped (time range)",
    }


def test_every_query_uses_the_datasource_and_job_variables() -> None:
    """Each query goes to ${datasource} and filters on $job, so one dashboard fits any setup."""
    for p in panels():
        for target in p.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert 'job=~"$job"' in target["expr"], p["title"]
    assert variables()["datasource"]["query"] == "prometheus"


def test_latency_queries_ask_for_exemplars() -> None:
    """The stage, create and Cinder latency panels show exemplars (links to traces)."""
    for title in (
        "Stage latency p50",
        "Stage latency p95",
        "Stage latency p99",
        "Create latency p50 / p95 / p99",
        "Cinder call latency p50 / p95 / p99",
    ):
        assert any(t.get("exemplar") for t in panel(title)["targets"]), title


def test_panels_fit_the_grid_without_overlapping() -> None:
    """Unique panel ids, 24 columns, no two panels on the same cells."""
    everything = load_dashboard()["panels"]
    assert len({p["id"] for p in everything}) == len(everything)
    taken: dict[tuple[int, int], str] = {}
    for p in everything:
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, p["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, (p["title"], taken.get((x, y)))
                taken[(x, y)] = p["title"]


# -- the Jaeger links ------------------------------------------------------------


def jaeger_urls() -> list[str]:
    dashboard = load_dashboard()
    urls = [link["url"] for link in dashboard.get("links", [])]
    for p in panels():
        urls += [link["url"] for link in p.get("links", [])]
        urls += [
            link["url"] for link in p.get("fieldConfig", {}).get("defaults", {}).get("links", [])
        ]
        content = p.get("options", {}).get("content", "")
        urls += re.findall(r"\]\((\$\{jaeger_url\}[^)]+)\)", content)
    return [url for url in urls if url.startswith("${jaeger_url}/search")]


def expand(url: str, **values: str) -> dict[str, Any]:
    """A Jaeger search URL with Grafana's variables filled in, as query parameters."""
    defaults = {
        "jaeger_url": variables()["jaeger_url"]["query"],
        "service": variables()["service"]["query"],
        "__from": "1700000000000",
        "__to": "1700000600000",
        **values,
    }
    filled = re.sub(r"\$\{([\w.]+)\}", lambda m: defaults[m.group(1)], url)
    parts = urllib.parse.urlsplit(filled)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query["tags"] = json.loads(query["tags"])
    return {"base": f"{parts.scheme}://{parts.netloc}{parts.path}", **query}


def test_jaeger_links_search_failed_creates_in_the_time_range() -> None:
    """Dashboard links open Jaeger's search for voltrace.outcome=server_error, in µs bounds."""
    searches = [
        expand(url, **{"__data.fields.failure_class": "over_quota"}) for url in jaeger_urls()
    ]
    assert searches
    for search in searches:
        assert search["base"] == "http://localhost:16686/search"
        assert search["service"] == "nova-api"
        assert (search["lookback"], search["start"], search["end"]) == (
            "custom",
            "1700000000000000",
            "1700000600000000",
        )
    tags = [search["tags"] for search in searches]
    assert {"voltrace.outcome": "server_error"} in tags
    assert {"voltrace.outcome": "client_error"} in tags
    assert {"voltrace.failure_class": "over_quota"} in tags
    # The async outcomes table opens the follower's follow_volume spans of that class.
    assert {semconv.FOLLOW_FAILURE_CLASS: "over_quota"} in tags
    assert all(
        set(t) <= {"voltrace.outcome", "voltrace.failure_class", semconv.FOLLOW_FAILURE_CLASS}
        for t in tags
    )
    top = [link["title"] for link in load_dashboard()["links"]]
    assert "Failed creates in Jaeger (5xx)" in top


def test_jaeger_link_tags_are_what_the_server_span_carries(nova: Any, captured: Any) -> None:
    """A real failed create's SERVER span has the tag values the links search for."""
    nova.sim.inject(Fault("volumes.create", status=500, times=1))
    assert nova.create({"size": 1}).status == 500
    span = captured.wait_for(lambda c: c.server_spans() and c.server_spans()[-1])
    assert span.resource.attributes["service.name"] == variables()["service"]["query"]
    searched = {
        key: value
        for url in jaeger_urls()
        for key, value in expand(url, **{"__data.fields.failure_class": "cinder_server_error"})[
            "tags"
        ].items()
        # The follow_volume span's tag is another span's (test_follow checks it).
        if value in ("server_error", "cinder_server_error") and key != semconv.FOLLOW_FAILURE_CLASS
    }
    assert searched == {
        "voltrace.outcome": "server_error",
        "voltrace.failure_class": "cinder_server_error",
    }
    for key, value in searched.items():
        assert span.attributes[key] == value


# -- alert rules, Prometheus config, docker-compose, provisioning ----------------


def alert_rules() -> list[dict]:
    return [
        r
        for g in yaml.safe_load((DASHBOARDS / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
    ]


def test_alert_rules_cover_the_issue_and_carry_summary_and_runbook() -> None:
    """Failure ratio, stage p95, Cinder unreachable/5xx, over quota, creates piling up in a
    stage, volumes stuck in creating or failing after the 200: each with its runbook."""
    rules = {r["alert"]: r for r in alert_rules()}
    assert 'outcome="server_error"' in rules["VoltraceCreateFailureRatioHigh"]["expr"]
    assert "histogram_quantile(0.95" in rules["VoltraceStageLatencyHigh"]["expr"]
    assert "cinder_unreachable" in rules["VoltraceCinderUnreachable"]["expr"]
    assert '"5.."' in rules["VoltraceCinderServerErrors"]["expr"]
    assert "over_quota" in rules["VoltraceOverQuotaSpike"]["expr"]
    assert "voltrace_stage_in_flight" in rules["VoltraceCreatesPilingUpInStage"]["expr"]
    stuck = rules["VoltraceVolumesStuckCreating"]["expr"]
    assert 'voltrace_volume_async_outcomes_total{outcome="stuck_creating"}' in stuck
    failing = rules["VoltraceVolumesFailingAfterAnswer"]["expr"]
    assert failing.startswith("sum by (job, failure_class) (rate(")
    assert 'outcome="error"' in failing
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"], name
        steps = re.findall(r"^\d\. ", rule["annotations"]["runbook"], re.M)
        assert len(steps) >= 3, name


def test_prometheus_yml_scrapes_the_default_metrics_port_and_loads_the_rules() -> None:
    """Job voltrace scrapes 127.0.0.1:9464 and loads alerts.yml from beside it."""
    config = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["job_name"] == "voltrace"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9464"]
    assert config["rule_files"] == ["alerts.yml"]
    assert (DASHBOARDS / "alerts.yml").is_file()


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def mounts(service: str) -> dict[str, Path]:
    """container path -> host path of a service's bind mounts (relative to the compose file)."""
    found = {}
    for volume in compose()["services"][service].get("volumes", []):
        source, target = volume.split(":")[:2]
        found[target] = (COMPOSE.parent / source).resolve()
    return found


def test_docker_compose_is_well_formed_and_every_mounted_file_exists() -> None:
    """Jaeger v2, Prometheus and Grafana 11.6, pinned, and every bind mount's source exists."""
    services = compose()["services"]
    assert set(services) == {"jaeger", "prometheus", "grafana"}
    images = {name: service["image"] for name, service in services.items()}
    assert re.fullmatch(r"jaegertracing/jaeger:2\.\d+\.\d+", images["jaeger"])
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", images["prometheus"])
    assert images["grafana"] == "grafana/grafana:11.6.0"  # the schema the dashboard is checked on
    for name in services:
        for target, source in mounts(name).items():
            assert source.exists(), (name, target, source)
    flags = services["prometheus"]["command"]
    config = next(f.split("=", 1)[1] for f in flags if f.startswith("--config.file="))
    assert mounts("prometheus")[config] == (DASHBOARDS / "prometheus.yml").resolve()
    rules = mounts("prometheus")["/etc/prometheus/alerts.yml"]
    assert rules == (DASHBOARDS / "alerts.yml").resolve()
    assert "--enable-feature=exemplar-storage" in flags


def test_grafana_provisioning_wires_dashboard_datasources_and_exemplar_links() -> None:
    """The dashboard file, its datasource uid and the exemplar -> Jaeger link all line up."""
    grafana = mounts("grafana")
    datasources = yaml.safe_load(
        (grafana["/etc/grafana/provisioning/datasources"] / "voltrace.yml").read_text()
    )
    by_type = {d["type"]: d for d in datasources["datasources"]}
    assert variables()["datasource"]["current"]["value"] == by_type["prometheus"]["uid"]
    [destination] = by_type["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert destination == {
        **destination,
        "name": "trace_id",
        "datasourceUid": by_type["jaeger"]["uid"],
    }
    assert by_type["jaeger"]["url"] == variables()["jaeger_url"]["query"]
    providers = yaml.safe_load(
        (grafana["/etc/grafana/provisioning/dashboards"] / "voltrace.yml").read_text()
    )
    [provider] = providers["providers"]
    mounted = [target for target, source in grafana.items() if source == DASHBOARD.resolve()]
    assert [Path(m).parent for m in mounted] == [Path(provider["options"]["path"])]
    environment = compose()["services"]["grafana"]["environment"]
    assert environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] in mounted


@pytest.mark.parametrize(
    "name",
    [
        "voltrace_stage_duration_seconds",
        "voltrace_create_duration_seconds",
        "voltrace_creates_total",
        "voltrace_cinder_request_duration_seconds",
        "voltrace_telemetry_spans_dropped_total",
        "voltrace_stage_in_flight",
        "voltrace_volume_settle_duration_seconds",
        "voltrace_volume_async_outcomes_total",
        "voltrace_volumes_creating",
        "voltrace_volume_follows_dropped_total",
    ],
)
def test_docs_describe_every_metric(name: str) -> None:
    """docs/metrics.md documents each metric voltrace exports."""
    assert f"`{name}" in DOCS.read_text()


def test_docs_describe_every_alert_and_panel() -> None:
    """docs/metrics.md names each alert and each dashboard panel."""
    text = DOCS.read_text()
    for rule in alert_rules():
        assert rule["alert"] in text
    for p in panels():
        assert p["title"] in text, p["title"]
