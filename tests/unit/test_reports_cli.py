"""``genesis get reports``: the pure rendering, and the retired interval settings."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import yaml

from orchestrator.cli.main import build_parser
from orchestrator.cli.reports import render
from orchestrator.domain.analysis import MetricsSample, trends
from orchestrator.domain.schedule import Report
from orchestrator.settings import load_settings

NOW = datetime(2026, 11, 29, 6, 0, tzinfo=timezone.utc)
END = datetime(2026, 11, 29, tzinfo=timezone.utc)
SAMPLES = [MetricsSample("decomposition", "low", END - timedelta(days=d), sr, 0.01, 0.4)
           for d, sr in ((1, 0.9), (2, 1.0), (10, 0.8))]
ANALYSIS = Report(id=2, kind="analysis", period="2026-11-28", created_at=END,
                  body={"period": "2026-11-28", **trends(SAMPLES, end=END)})
DAILY = Report(id=1, kind="reporting", period="2026-11-28", created_at=END,
               body={"total": 4, "merged": 3, "success_rate": 0.75})


def test_table():
    lines = render([ANALYSIS, DAILY], None, now=NOW).splitlines()
    assert lines[0].split() == ["NAME", "KIND", "PERIOD", "AGE", "SUMMARY"]
    assert lines[1].startswith("analysis-2026-11-28") and "6h" in lines[1]
    assert "7d: 2 runs, success_rate 95.0% (+15.0%), regression 1.0% (+0.0%), llm_reduction 40.0%" in lines[1]
    assert lines[2].endswith("4 finished, 3 merged, success_rate 75.0%")
    assert render([], None) == "No resources found."


def test_json_yaml_and_name():
    listed = json.loads(render([DAILY], "json"))  # a list of one is still a List
    assert listed["kind"] == "List" and [i["kind"] for i in listed["items"]] == ["Report"]
    one = json.loads(render([DAILY], "json", named=True))  # one asked for by name is the object
    assert one["kind"] == "Report" and one["metadata"]["name"] == "reporting-2026-11-28"
    assert one["metadata"]["labels"] == {"kind": "reporting", "period": "2026-11-28"} and one["body"]["total"] == 4
    many = yaml.safe_load(render([ANALYSIS, DAILY], "yaml"))
    assert many["kind"] == "List" and [i["metadata"]["name"] for i in many["items"]] == [
        "analysis-2026-11-28", "reporting-2026-11-28"]
    assert many["items"][0]["body"]["windows"]["7d"]["overall"]["count"] == 2
    assert render([ANALYSIS, DAILY], "name") == "report/analysis-2026-11-28\nreport/reporting-2026-11-28"


def test_reports_is_a_kind_of_get():
    args = build_parser().parse_args(["get", "reports", "-o", "json", "-l", "kind=analysis"])
    assert (args.kind, args.output, args.selector) == ("reports", "json", "kind=analysis")


def test_retired_interval_settings_load_with_a_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING)  # a CLI test earlier in the session may have set the root to ERROR
    config = tmp_path / "genesis.yaml"
    config.write_text("cleanup_interval_s: 21600\nnats: {report_interval_s: 86400, health_interval_s: 60}\n")
    settings = load_settings(config)
    assert settings.nats.health_interval_s == 60
    assert not hasattr(settings, "cleanup_interval_s") and not hasattr(settings.nats, "report_interval_s")
    assert {getattr(r, "setting", None) for r in caplog.records} >= {"cleanup_interval_s", "nats.report_interval_s"}
