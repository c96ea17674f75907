"""Which server the CLI talks to: the pure resolution of flags, environment
and contexts file (:func:`orchestrator.cli.contexts.resolve`), and the file's edits."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from orchestrator.cli import config, contexts
from orchestrator.cli.contexts import Target, resolve
from orchestrator.errors import GenesisError

DOC = {"current-context": "prod",
       "contexts": [{"name": "prod", "server": "https://prod.example/", "token-file": "prod.token"},
                    {"name": "lab", "server": "http://lab:8080", "token": "lab-secret",
                     "insecure-skip-tls-verify": True},
                    {"name": "ca", "server": "https://ca.example", "certificate-authority": "certs/ca.pem"}]}
BASE = Path("/home/op/.genesis")


def _resolve(*, server=None, token=None, context=None, env=None, doc=DOC):
    return resolve(server=server, token=token, context=context, env=env or {}, doc=doc, base=BASE)


def test_nothing_configured_is_local_mode():
    assert _resolve(doc={}) is None
    assert _resolve(doc={"contexts": DOC["contexts"]}) is None  # contexts, but none current


def test_the_current_context_with_its_token_file_relative_to_the_file():
    assert _resolve() == Target(server="https://prod.example", source='context "prod"',
                                token_file="/home/op/.genesis/prod.token")


def test_a_named_context_its_token_and_tls_settings():
    assert _resolve(context="lab") == Target(server="http://lab:8080", source='context "lab"', token="lab-secret",
                                             verify=False)
    assert _resolve(context="ca").verify == "/home/op/.genesis/certs/ca.pem"


def test_flags_beat_the_environment_which_beats_the_file():
    env = {"GENESIS_SERVER": "http://env:1", "GENESIS_TOKEN": "env-token"}
    assert _resolve(env=env) == Target(server="http://env:1", source="GENESIS_SERVER", token="env-token")
    assert _resolve(server="http://flag:2", token="flag-token", env=env) == \
        Target(server="http://flag:2", source="--server", token="flag-token")
    # --context picks the context; --server and --token still override its fields.
    assert _resolve(context="lab", server="http://other:3", token="t") == \
        Target(server="http://other:3", source='context "lab"', token="t", verify=False)
    # A token flag replaces the context's token file.
    assert _resolve(token="t") == Target(server="https://prod.example", source='context "prod"', token="t")


def test_a_context_token_goes_only_to_its_own_server():
    assert _resolve(server="http://elsewhere").token_file is None
    same = _resolve(server="https://prod.example")  # the current context's server: its credentials apply
    assert same.token_file == "/home/op/.genesis/prod.token" and same.source == "--server"


def test_unknown_or_dangling_contexts_are_errors():
    with pytest.raises(GenesisError) as unknown:
        _resolve(context="nope")
    assert unknown.value.code == "bad_input"
    with pytest.raises(GenesisError) as dangling:
        _resolve(doc={"current-context": "gone", "contexts": []})
    assert dangling.value.code == "bad_config"
    with pytest.raises(GenesisError) as serverless:
        _resolve(doc={"current-context": "x", "contexts": [{"name": "x"}]})
    assert serverless.value.code == "bad_config"


def test_contexts_path_precedence(monkeypatch):
    assert contexts.contexts_path("/a", {"GENESIS_CONTEXTS": "/b"}) == Path("/a")
    assert contexts.contexts_path(None, {"GENESIS_CONTEXTS": "/b"}) == Path("/b")
    monkeypatch.setenv("HOME", "/home/op")
    assert contexts.contexts_path(None, {}) == Path("/home/op/.genesis/config")


def test_set_context_adds_updates_and_swaps_the_secret():
    doc = contexts.set_context({}, "prod", server="https://p/", token="t1", current=True)
    assert doc == {"contexts": [{"name": "prod", "server": "https://p", "token": "t1"}], "current-context": "prod"}
    doc = contexts.set_context(doc, "prod", token_file="/t")  # the server is kept, the token replaced
    assert doc["contexts"] == [{"name": "prod", "server": "https://p", "token-file": "/t"}]
    with pytest.raises(GenesisError, match="needs --server"):
        contexts.set_context(doc, "new")


def test_the_file_is_owner_only_and_round_trips(tmp_path):
    path = tmp_path / "dir" / "config"
    contexts.save(path, DOC)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and contexts.load(path) == DOC
    assert contexts.load(tmp_path / "missing") == {}
    path.write_text("- not a mapping\n")
    with pytest.raises(GenesisError, match="not a mapping"):
        contexts.load(path)


def test_get_contexts_never_prints_a_token():
    text = config.render(DOC)
    assert "lab-secret" not in text
    lines = text.splitlines()
    assert lines[0].split() == ["CURRENT", "NAME", "SERVER", "AUTH"]
    assert lines[1].split() == ["*", "prod", "https://prod.example/", "token-file", "prod.token"]
    assert lines[2].split() == ["lab", "http://lab:8080", "token"]
    assert lines[3].split() == ["ca", "https://ca.example", "none"]


def test_config_verbs_edit_the_file_and_local_verbs_refuse_a_server(tmp_path, monkeypatch, capsys):
    from orchestrator.cli.main import main

    path = tmp_path / "contexts"
    monkeypatch.setenv("GENESIS_CONTEXTS", str(path))
    for name in ("GENESIS_SERVER", "GENESIS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert main(["config", "set-context", "lab", "--server", "http://lab:1", "--token", "s3cret"]) == 0
    assert main(["config", "get-contexts"]) == 0
    assert "s3cret" not in capsys.readouterr().out
    assert main(["config", "use-context", "nope"]) == 1
    assert capsys.readouterr().err == f'error: context "nope" not found in {path} (not_found)\n'
    assert main(["config", "use-context", "lab"]) == 0
    assert contexts.load(path)["current-context"] == "lab" and stat.S_IMODE(path.stat().st_mode) == 0o600
    capsys.readouterr()
    for argv in (["db", "current"], ["tokens", "list"], ["images", "build", "monorepo"], ["serve", "--once"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: `genesis {argv[0]}` runs where Genesis runs") and \
            err.endswith("(local_only)\n") and 'context "lab"' in err, err
