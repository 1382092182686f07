"""The shipped Grafana dashboards are well formed, and their metric names are read correctly."""

from __future__ import annotations

import re

import pytest

from support.dashboards import Dashboard, load_dashboards, metric_names, variable_metric_names

DASHBOARDS = load_dashboards()
EXPECTED_UIDS = {"prism-engine", "prism-router", "prism-autoscaling"}


def by_uid(uid: str) -> Dashboard:
    return next(dashboard for dashboard in DASHBOARDS if dashboard.uid == uid)


def test_each_expected_dashboard_ships_as_its_uid_with_the_prism_tag() -> None:
    assert {dashboard.uid for dashboard in DASHBOARDS} == EXPECTED_UIDS
    for dashboard in DASHBOARDS:
        assert dashboard.path.stem == dashboard.uid
        assert "prism" in dashboard.model["tags"]
        assert dashboard.model["title"] and dashboard.model["schemaVersion"] >= 38


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda d: d.uid)
def test_dashboard_picks_a_prometheus_datasource(dashboard: Dashboard) -> None:
    variables = {v["name"]: v for v in dashboard.model["templating"]["list"]}
    datasource = variables["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda d: d.uid)
def test_every_panel_queries_a_metric_through_the_datasource_variable(
    dashboard: Dashboard,
) -> None:
    assert dashboard.panels
    for panel in dashboard.panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel["targets"], title
        assert all(target["expr"].strip() for target in panel["targets"]), title
        assert dashboard.panel_metrics()[title], f"{title}: no metric in its queries"


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda d: d.uid)
def test_panel_ids_and_titles_are_unique(dashboard: Dashboard) -> None:
    ids = [panel["id"] for panel in dashboard.panels]
    titles = [panel["title"] for panel in dashboard.panels]
    assert len(set(ids)) == len(ids)
    assert len(set(titles)) == len(titles)


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda d: d.uid)
def test_rates_use_the_rate_interval(dashboard: Dashboard) -> None:
    for panel in dashboard.panels:
        for target in panel["targets"]:
            for window in re.findall(r"\[([^\]]*)\]", target["expr"]):
                assert window == "$__rate_interval", (panel["title"], target["expr"])


def test_dashboards_query_only_names_as_ray_exports_them() -> None:
    """Ray prefixes every metric with ``ray_``; counters end in ``_total``."""
    for dashboard in DASHBOARDS:
        for name in dashboard.metrics():
            assert name.startswith(("ray_prism_", "ray_serve_")), (dashboard.uid, name)
    engine = by_uid("prism-engine").metrics()
    assert "ray_prism_generation_tokens_total" in engine
    assert "ray_prism_time_to_first_token_seconds_bucket" in engine
    assert not any(name.endswith("_seconds") for name in engine)


def test_histogram_quantile_names_the_bucket_series_only() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, model) "
        '(rate(ray_prism_time_to_first_token_seconds_bucket{model=~"$model"}[$__rate_interval])))'
    )
    assert metric_names(expr) == {"ray_prism_time_to_first_token_seconds_bucket"}


def test_label_names_in_grouping_and_matching_clauses_are_not_metrics() -> None:
    expr = (
        "sum by (model, outcome) (rate(decisions_total[5m]))"
        " / ignoring (outcome) group_left sum without (replica, le) (rate(decisions_total[5m]))"
        " * on (model) group_right (policy) info_metric"
    )
    assert metric_names(expr) == {"decisions_total", "info_metric"}


def test_strings_variables_durations_and_numbers_are_not_metrics() -> None:
    expr = (
        'label_replace(up{job="prism", instance=~"${node}"}, "host", "$1", "instance", "(.*):.*")'
        " offset 1h30m > bool 1e3 and rate(errors_total[$__rate_interval] @ start()) > 0x1F"
        " unless [[legacy_variable]] or vector(0) + Inf"
    )
    assert metric_names(expr) == {"up", "errors_total"}


def test_functions_and_aggregations_are_not_metrics_even_without_a_metric() -> None:
    assert metric_names("sum(vector(1)) + time() - scalar(max(count(topk(3, x))))") == {"x"}
    assert metric_names("avg_over_time(ray_a[5m:30s]) / quantile(0.9, ray_b)") == {
        "ray_a",
        "ray_b",
    }


def test_variable_queries_name_the_metric_they_read() -> None:
    query = 'label_values(ray_serve_autoscaling_desired_replicas{application=~"$app"}, deployment)'
    assert variable_metric_names(query) == {"ray_serve_autoscaling_desired_replicas"}
    assert variable_metric_names("label_values(ray_prism_preemptions_total, model)") == {
        "ray_prism_preemptions_total"
    }
    assert variable_metric_names("label_values(model)") == set()
    assert by_uid("prism-engine").variable_metrics() == {"ray_prism_num_requests_running"}
