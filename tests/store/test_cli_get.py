"""``genesis get experiments`` end to end through ``orchestrator.cli.main``, on
SQLite and PostgreSQL, without Docker (``get`` builds only the store)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from helpers import ROOT, Lines

from orchestrator.domain.models import Phase

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def cli(database_url, tmp_path, monkeypatch, capsys):
    """Run `genesis ARGS` in-process against the test database; returns (exit code, stdout, stderr)."""
    from orchestrator.cli.main import main

    config = tmp_path / "genesis.yaml"
    config.write_text(json.dumps({"home": str(tmp_path / "home"), "database_url": database_url}))
    monkeypatch.setenv("GENESIS_CONFIG", str(config))
    for name in ("GENESIS_DATABASE_URL", "GENESIS_HOME"):
        monkeypatch.delenv(name, raising=False)

    def run(*args: str):
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def records(store, seed):
    """600 newer records in front of one old needle: more than the old hidden limit of 500."""
    seed([dict(id="needle", instance_id="needle", created_at=T0)]
         + [dict(id=f"hay-{i:04d}", risk_level=("low", "high")[i % 2], created_at=T0 + timedelta(seconds=i + 1))
            for i in range(600)])
    return store


def test_an_old_match_is_listed_and_a_listing_of_one_is_a_list(cli, records):
    code, out, _ = cli("get", "experiments", "-l", "instance_id=needle", "-o", "json")
    doc = json.loads(out)
    assert code == 0 and (doc["kind"], doc["metadata"]) == ("List", {})
    assert [item["metadata"]["name"] for item in doc["items"]] == ["needle"]

    code, out, _ = cli("get", "experiment", "needle", "-o", "json")
    assert code == 0 and json.loads(out)["kind"] == "Experiment"  # named: the bare object, as kubectl

    assert cli("get", "experiments", "--field-selector", "metadata.name=needle", "-o", "name")[1] == \
        "experiment/needle\n"
    code, out, _ = cli("get", "experiments", "-o", "name")
    assert code == 0 and len(out.splitlines()) == 601  # no --limit: everything


def test_limit_and_continue_walk_every_record_once(cli, records):
    code, out, err = cli("get", "experiments", "-l", "risk_level in (high)", "--limit", "250")
    assert code == 0 and len(out.splitlines()) == 251  # header + 250 rows
    token = err.split("--continue ")[1].strip()

    names, pages = out.splitlines()[1:], 1
    while token:
        code, out, _ = cli("get", "experiments", "-l", "risk_level in (high)", "--limit", "250",
                           "--continue", token, "-o", "yaml")
        doc = yaml.safe_load(out)
        assert code == 0 and doc["kind"] == "List" and len(doc["items"]) <= 250
        names += [item["metadata"]["name"] for item in doc["items"]]
        token, pages = doc["metadata"].get("continue"), pages + 1
    assert pages == 2 and len(names) == 300
    assert [n.split()[0] for n in names[:250]] + names[250:] == [f"hay-{i:04d}" for i in range(599, 0, -2)]


@pytest.mark.parametrize(("args", "message"), [
    (["-l", "color=red"], "unknown label 'color'"),
    (["-l", "risk_level>low"], "unable to parse requirement"),
    (["--field-selector", "status.reason=x"], "unknown field 'status.reason'"),
    (["--continue", "garbage!"], "invalid continue token"),
    (["--limit", "0"], "limit must be a positive number"),
])
def test_bad_selectors_tokens_and_limits_are_one_line_of_bad_input(cli, records, args, message):
    code, out, err = cli("get", "experiments", *args)
    assert code == 1 and out == "" and message in err
    assert err.startswith("error: ") and err.endswith("(bad_input)\n") and err.count("\n") == 1


def test_a_name_does_not_combine_with_a_selector(cli, records):
    code, _, err = cli("get", "experiment", "needle", "-l", "risk_level=low")
    assert code == 1 and "(bad_input)" in err


def test_watch_prints_the_selection_then_each_change(records, database_url, tmp_path):
    """A real ``genesis get -w`` process: the row, then the one change it watches for; SIGINT ends it (130)."""
    config = tmp_path / "watch.yaml"
    config.write_text(json.dumps({"home": str(tmp_path / "home"), "database_url": database_url,
                                  "api": {"watch_interval_s": 0.1}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
    env.update(GENESIS_CONFIG=str(config), GENESIS_CONTEXTS=str(tmp_path / "none"), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli.main", "get", "experiments", "-w", "-l",
                             "instance_id=needle"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out = Lines(proc.stdout)
    try:
        lines = [out.next(), out.next()]  # header, the row
        records.transition("needle", Phase.BUILDING, reason="Admitted")
        lines.append(out.next())
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 130, proc.stderr.read()
    assert lines[1].split()[4] == "Pending" and lines[2].split()[:1] + lines[2].split()[4:5] == ["needle", "Building"]
    assert out.rest() == ""  # nothing else: not the same state twice, nor the other records' changes
