"""`meshca serve`'s flags and environment variables, built from the metadata of Settings."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from meshca.cli.main import build_parser
from meshca.cli.serve_args import settings_from
from meshca.config import GROUPS, Settings
from meshca.core.cpus import usable_cores
from meshca.core.durations import format_duration, parse_duration
from meshca.core.flags import flag_of, shown_default
from meshca.core.keys import KeyType
from meshca.core.rate_limit import RateLimit
from meshca.core.roles import Role

FIELDS = dataclasses.fields(Settings)


@pytest.fixture(autouse=True)
def _no_meshca_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MESHCA_"):
            monkeypatch.delenv(name)


def _serve_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = commands.choices["serve"]
    assert isinstance(serve, argparse.ArgumentParser)
    return serve


def _settings(*flags: str) -> Settings:
    return settings_from(build_parser().parse_args(["serve", *flags]))


@contextlib.contextmanager
def _refused() -> Iterator[io.StringIO]:
    errors = io.StringIO()
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(errors):
        yield errors
    assert exit_info.value.code == 2


# ---- every field is a flag ------------------------------------------------------------------

def test_every_setting_has_a_flag_an_env_var_and_help_that_states_its_default() -> None:
    actions = {a.dest: a for a in _serve_parser()._actions}
    for field in FIELDS:
        spec = flag_of(field)
        action = actions.get(field.name)
        assert action is not None, f"{field.name} has no flag"
        assert action.option_strings == [spec.name]
        assert spec.env == "MESHCA_" + spec.name[2:].replace("-", "_").upper()
        assert action.help and spec.help in action.help
        assert f"(default {shown_default(spec, field.default)}; env {spec.env})" in action.help
        assert spec.group in GROUPS, f"{field.name}: unknown help group {spec.group!r}"


def test_help_lists_every_flag_without_failing() -> None:
    text = _serve_parser().format_help()
    for field in FIELDS:
        assert flag_of(field).name in text and flag_of(field).env in text


@pytest.mark.parametrize("field", [f for f in FIELDS if flag_of(f).parse is not None
                                   and flag_of(f).shown is None and f.default is not None
                                   and not flag_of(f).repeatable and not flag_of(f).switch],
                         ids=lambda f: f.name)
def test_the_default_help_shows_is_the_default_the_flag_gives(field: dataclasses.Field[object]) -> None:
    spec = flag_of(field)
    assert spec.parse is not None
    assert spec.parse(shown_default(spec, field.default)) == field.default


def test_no_flags_give_the_defaults() -> None:
    settings = _settings()
    assert settings == Settings()
    # A few of the defaults as they were before the flags were generated.
    assert settings.max_ttl == timedelta(hours=28) and settings.backdate == timedelta(seconds=60)
    assert settings.server_dns_names == ("localhost", "meshca.meshca-system.svc")
    assert settings.token_audiences == ("istio-ca",)
    assert settings.admin_token_audiences == ("meshca-admin",)
    assert settings.ext_authz_addr == "127.0.0.1:9191"
    assert settings.issuance_rate_per_identity == RateLimit(20, 200)
    assert settings.ca_key_type is KeyType.EC_P256 and settings.keystore == "file"
    assert settings.rotation_activate_at == pytest.approx(5 / 6)


def test_flags_become_settings() -> None:
    settings = _settings(
        "--max-ttl", "12h", "--default-ttl", "1h", "--server-dns-name", "a", "--server-dns-name",
        "b", "--admin-service-account", "ops/admin=operator", "--issuance-rate-per-source", "off",
        "--ext-authz-addr", "off", "--verify-pod-binding", "--ca-key-type", "rsa-2048",
        "--rotation-prepare-at", "0.4", "--workers", "3", "--key-dir", "/keys")
    assert settings.max_ttl == timedelta(hours=12) and settings.default_ttl == timedelta(hours=1)
    assert settings.server_dns_names == ("a", "b")
    assert settings.admin_service_accounts == (("ops/admin", Role.OPERATOR),)
    assert settings.issuance_rate_per_source is None and settings.ext_authz_addr is None
    assert settings.verify_pod_binding and settings.ca_key_type is KeyType.RSA_2048
    assert settings.rotation_prepare_at == 0.4 and settings.workers == 3
    assert settings.key_dir == Path("/keys")


# ---- environment variables ------------------------------------------------------------------

@pytest.mark.parametrize(("variable", "text", "name", "value"), [
    ("MESHCA_MAX_TTL", "25h", "max_ttl", timedelta(hours=25)),
    ("MESHCA_WORKERS", "4", "workers", 4),
    ("MESHCA_KUBE_QPS", "2.5", "kube_qps", 2.5),
    ("MESHCA_ROTATION_PREPARE_AT", "0.25", "rotation_prepare_at", 0.25),
    ("MESHCA_CA_KEY_TYPE", "ec-p384", "ca_key_type", KeyType.EC_P384),
    ("MESHCA_KEYSTORE", "vault-kv", "keystore", "vault-kv"),
    ("MESHCA_CA_DIR", "/etc/cacerts", "ca_dir", Path("/etc/cacerts")),
    ("MESHCA_PUBLISH_CONFIGMAPS", "", "publish_configmaps", ""),  # "": every namespace
    ("MESHCA_EXT_AUTHZ_ADDR", "off", "ext_authz_addr", None),
    ("MESHCA_EXT_AUTHZ_ADDR", "", "ext_authz_addr", None),
    ("MESHCA_ISSUANCE_RATE_PER_IDENTITY", "5/m", "issuance_rate_per_identity", RateLimit(5 / 60, 1)),
    ("MESHCA_VERIFY_POD_BINDING", "true", "verify_pod_binding", True),
    ("MESHCA_EXT_AUTHZ_TLS", "Yes", "ext_authz_tls", True),
    ("MESHCA_WATCH_KUBE_POLICIES", "0", "watch_kube_policies", False),
    ("MESHCA_SERVER_DNS_NAME", "a.example, b.example", "server_dns_names", ("a.example", "b.example")),
    ("MESHCA_ADMIN_SPIFFE_ID", "spiffe://cluster.local/ns/a/sa/b=admin", "admin_spiffe_ids",
     (("spiffe://cluster.local/ns/a/sa/b", Role.ADMIN),)),
    ("MESHCA_TRUSTED_NODE_ACCOUNT", "kube-system/agent", "trusted_node_accounts", ("kube-system/agent",)),
    ("MESHCA_DATA_DIR", "/var/lib/meshca", "data_dir", Path("/var/lib/meshca")),
    ("MESHCA_TOKEN_SKEW", "30s", "token_skew", timedelta(seconds=30)),
    # An empty variable is "unset" for every value that has a parser: the default stays.
    ("MESHCA_MAX_TTL", "", "max_ttl", timedelta(hours=28)),
    ("MESHCA_CA_DIR", "", "ca_dir", None),
    ("MESHCA_KEYSTORE", "", "keystore", "file"),
])
def test_environment_variables_set_defaults(monkeypatch: pytest.MonkeyPatch, variable: str,
                                            text: str, name: str, value: object) -> None:
    monkeypatch.setenv(variable, text)
    assert getattr(_settings(), name) == value


def test_a_flag_wins_over_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHCA_MAX_TTL", "25h")
    monkeypatch.setenv("MESHCA_TOKEN_AUDIENCE", "from-env,other")
    settings = _settings("--max-ttl", "26h", "--token-audience", "from-flag")
    assert settings.max_ttl == timedelta(hours=26)
    assert settings.token_audiences == ("from-flag",)
    assert _settings("--max-ttl", "27h").token_audiences == ("from-env", "other")


# ---- refusals -------------------------------------------------------------------------------

@pytest.mark.parametrize(("flags", "message"), [
    (["--max-ttl", "soon"], "argument --max-ttl: 'soon' is not a duration"),
    (["--workers", "0"], "argument --workers: '0' is not a positive whole number"),
    (["--rotation-prepare-at", "2"], "argument --rotation-prepare-at: '2' must be a fraction"),
    (["--keystore", "hsm"], "argument --keystore: invalid choice: 'hsm'"),
    (["--ca-key-type", "dsa-1024"], "argument --ca-key-type: invalid choice: 'dsa-1024'"),
    (["--issuance-rate-per-source", "fast"], "is not a rate limit like 20/s:200"),
    (["--admin-service-account", "ops/admin=root"], "unknown role 'root'"),
    (["--cluster", "east=/nonexistent/kubeconfig"], "kubeconfig /nonexistent/kubeconfig does not exist"),
    (["--trusted-node-account", "agent"], "must be NAMESPACE/SERVICE_ACCOUNT"),
])
def test_bad_flags_give_one_argparse_error(flags: list[str], message: str) -> None:
    with _refused() as errors:
        build_parser().parse_args(["serve", *flags])
    lines = [line for line in errors.getvalue().splitlines() if "error:" in line]
    assert len(lines) == 1 and message in lines[0], errors.getvalue()


@pytest.mark.parametrize(("variable", "text", "message"), [
    ("MESHCA_MAX_TTL", "soon", "argument --max-ttl: 'soon' is not a duration"),
    ("MESHCA_WORKERS", "many", "argument --workers: 'many' is not a positive whole number"),
    ("MESHCA_KEYSTORE", "hsm", "argument --keystore: invalid choice: 'hsm'"),
    ("MESHCA_EXT_AUTHZ_TLS", "maybe", "argument --ext-authz-tls: 'maybe' is not a yes or no"),
    ("MESHCA_ADMIN_SERVICE_ACCOUNT", "ops/admin=admin,Ops/x=admin", "argument --admin-service-account"),
])
def test_bad_variables_give_the_same_argparse_error(monkeypatch: pytest.MonkeyPatch, variable: str,
                                                    text: str, message: str) -> None:
    monkeypatch.setenv(variable, text)
    with _refused() as errors:
        build_parser().parse_args(["serve"])
    assert message in errors.getvalue() and "Traceback" not in errors.getvalue()


def test_values_that_parse_but_do_not_fit_together_are_refused_by_settings() -> None:
    with pytest.raises(ValueError, match="--default-ttl must not exceed --max-ttl"):
        _settings("--default-ttl", "8d")


def test_other_commands_take_the_data_dir_from_the_same_declaration(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHCA_DATA_DIR", "/srv/meshca")
    args = build_parser().parse_args(["dev", "token", "--namespace", "a", "--service-account", "b"])
    assert args.data_dir == Path("/srv/meshca")


# ---- the text forms -------------------------------------------------------------------------

@pytest.mark.parametrize(("span", "text"), [
    (timedelta(days=365), "365d"), (timedelta(hours=28), "28h"), (timedelta(minutes=90), "90m"),
    (timedelta(seconds=61), "61s"), (timedelta(seconds=0.5), "0.5s"), (timedelta(days=1), "1d"),
])
def test_durations_are_written_as_they_are_read(span: timedelta, text: str) -> None:
    assert format_duration(span) == text
    assert parse_duration(text) == span


@pytest.mark.parametrize("text", ["", "0s", "-1s", "1w", "1.5.2h", "h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("text", "limit"), [
    ("20/s:200", RateLimit(20, 200)), ("60/m", RateLimit(1, 2)), ("3600/h:5", RateLimit(1, 5)),
    ("10", RateLimit(10, 20)),
])
def test_rate_limits(text: str, limit: RateLimit) -> None:
    assert RateLimit.parse(text) == limit
    assert RateLimit.parse(limit.text) == limit


def test_config_imports_no_service_transport_or_infra_module() -> None:
    import ast

    import meshca.config

    tree = ast.parse(Path(meshca.config.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    layered = sorted(m for m in imported if m and m.startswith(
        ("meshca.service", "meshca.transport", "meshca.infra", "meshca.wiring", "meshca.cli")))
    assert not layered, layered


def test_the_keystore_settings_are_the_settings_of_the_same_names() -> None:
    from meshca.keystore_settings import KeystoreSettings
    from meshca.wiring.keystore_settings import keystore_settings

    settings = Settings(data_dir=Path("/srv/data"), keystore="vault-transit", vault_addr="https://v",
                        vault_auth="approle", vault_role_id="r", vault_transit_intermediate=True,
                        vault_kube_token_file=Path("/t"))
    assert keystore_settings(settings) == KeystoreSettings(
        keystore="vault-transit", kek_file=Path("/srv/data.kek"), vault_addr="https://v",
        vault_auth="approle", vault_role_id="r", vault_transit_intermediate=True,
        vault_kube_token_file=Path("/t"))
    assert keystore_settings(Settings(kek_file=Path("/k"))).kek_file == Path("/k")


# ---- --workers auto -------------------------------------------------------------------------

def test_workers_default_to_one_per_usable_core() -> None:
    assert Settings().workers == _settings().workers == usable_cores()
    assert _settings("--workers", "auto").workers == usable_cores()
    assert _settings("--workers", "AUTO").workers == usable_cores()
    assert _settings("--workers", "3").workers == 3


def test_workers_auto_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHCA_WORKERS", "auto")
    assert _settings().workers == usable_cores()
    assert _settings("--workers", "5").workers == 5  # the flag wins over the variable


@pytest.mark.parametrize(("cpu_max", "cap"), [
    ("max 100000\n", None),         # no quota: the affinity decides
    ("100000 100000\n", 1),          # one CPU
    ("150000 100000\n", 2),          # 1.5 CPUs: rounded up, the half core is usable
    ("10000 100000\n", 1),           # a tenth of a CPU: still one worker
    ("garbage\n", None),             # unreadable: the affinity decides
])
def test_usable_cores_respects_the_cgroup_quota(tmp_path: Path, cpu_max: str, cap: int | None) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores(path) == (affinity if cap is None else min(affinity, cap))
    assert usable_cores(tmp_path / "absent") == affinity
