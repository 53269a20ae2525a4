"""The fuzzing campaigns of issue 17 at modest size, in the normal run (scripts/fuzz runs the
same strategies and oracles at volume: docs/reliability.md has its figures). Each test asserts
that the oracle found no problem, and that the run reached the outcomes it must exercise, so that
a strategy that silently stopped generating (or an oracle that stopped judging) fails too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz.admin_campaign import SERVER_FLAGS as ADMIN_FLAGS
from tests.fuzz.admin_campaign import fuzz_admin
from tests.fuzz.authz_campaign import fuzz_authz
from tests.fuzz.ca_campaign import SERVER_FLAGS as CA_FLAGS
from tests.fuzz.ca_campaign import fuzz_create_certificate
from tests.fuzz.campaign import Tally
from tests.fuzz.ext_authz_campaign import fuzz_ext_authz
from tests.support import MeshcaProcess, start_meshca


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshcaProcess]:
    process = start_meshca(tmp_path_factory.mktemp("fuzz") / "data", *CA_FLAGS, *ADMIN_FLAGS)
    yield process
    process.stop()


def _clean(tally: Tally) -> None:
    assert not tally.problems, tally.render()


def test_create_certificate_refuses_only_with_documented_codes(server: MeshcaProcess) -> None:
    tally = fuzz_create_certificate(server, 200, seed_value=1)
    _clean(tally)
    assert tally.inputs == 200
    assert {"UNAUTHENTICATED", "INVALID_ARGUMENT"} <= set(tally.outcomes), tally.render()
    assert "INTERNAL" not in tally.outcomes and "UNKNOWN" not in tally.outcomes


def test_every_certificate_names_the_tokens_identity_and_nothing_else(server: MeshcaProcess) -> None:
    tally = fuzz_create_certificate(server, 100, seed_value=2, focus="identity")
    _clean(tally)
    # Both sides of the property were exercised: issued (and checked) and refused.
    assert tally.outcomes["OK"] >= 20 and tally.outcomes["INVALID_ARGUMENT"] >= 10, tally.render()


def test_admin_api_answers_random_requests_with_documented_statuses(server: MeshcaProcess) -> None:
    tally = fuzz_admin(server, 80, seed_value=3, stateful=3)
    _clean(tally)
    assert not any(outcome.isdigit() and int(outcome) >= 500 for outcome in tally.outcomes)
    assert {"200", "404"} <= set(tally.outcomes), tally.render()
    assert any(outcome.startswith("stateful ") for outcome in tally.outcomes), tally.render()


def test_ext_authz_answers_random_checks_with_a_decision_or_a_documented_error(
        server: MeshcaProcess) -> None:
    tally = fuzz_ext_authz(server, 200, seed_value=4)
    _clean(tally)
    assert "ALLOW" in tally.outcomes and any(o.startswith("DENY") for o in tally.outcomes), tally.render()


def test_compiled_authorization_agrees_with_the_field_by_field_engine() -> None:
    tally = fuzz_authz(100, seed_value=5)
    _clean(tally)
    assert tally.outcomes["pair: agree, a rule matched"] >= 10, tally.render()
    assert tally.outcomes["invalid: refused with a field path"] >= 5, tally.render()


def test_a_request_nested_past_protobufs_depth_limit_is_invalid_argument(server: MeshcaProcess) -> None:
    """Found by the campaign: grpc's own decoding refused it as UNKNOWN, with a traceback."""
    import grpc

    from tests.support import csr_pem

    nested: dict[str, object] = {"leaf": 1.0}
    for _ in range(60):
        nested = {"n": nested}
    with pytest.raises(grpc.RpcError) as refused:
        server.create_certificate(csr_pem(), struct=nested)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in str(refused.value.details())
    assert "Traceback" not in server.log_text()


@pytest.mark.parametrize("value", [[], {}, ["true"], 1.5, None])
def test_a_dry_run_annotation_of_the_wrong_type_is_refused_with_its_field(value: object) -> None:
    """Found by the campaign: a list here raised TypeError (unhashable) instead of PolicyInvalid."""
    from meshca.authz import PolicyInvalid, parse_policy

    with pytest.raises(PolicyInvalid) as refused:
        parse_policy({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                      "metadata": {"name": "p", "namespace": "web",
                                   "annotations": {"istio.io/dry-run": value}},
                      "spec": {"action": "DENY", "rules": [{}]}})
    assert [e.field for e in refused.value.errors] == ["metadata.annotations[istio.io/dry-run]"]
