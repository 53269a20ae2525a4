"""The agent's JWT-SVID and bundle clients of the meshca server (GrpcJwtMinter,
GrpcBundleSource) and the signer, over one ServerChannel, against the in-process fake
SvidService (tests/fakes/svid_server.py): real TLS, real bearer tokens, real SPIFFE bundles."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshca.agent.bundles import FileBundleSource
from meshca.agent.jwt_minter import GrpcJwtMinter
from meshca.agent.keys import make_key
from meshca.agent.metrics import AgentMetrics
from meshca.agent.server_bundles import GrpcBundleSource
from meshca.agent.server_channel import ServerChannel
from meshca.agent.server_signer import GrpcSigner
from meshca.core.jwt import b64url_decode
from meshca.core.spiffe import SpiffeId
from meshca.errors import PermissionDenied, Unavailable
from tests.fakes.agent_server import fake_authority
from tests.fakes.svid_server import TOKEN, FakeSvidServer
from tests.unit.pki import TRUST_DOMAIN, ec_key

WEB = SpiffeId.for_service_account(TRUST_DOMAIN, "default", "web")


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


@pytest.fixture
def fake() -> Iterator[FakeSvidServer]:
    server = FakeSvidServer(refresh_hint=7).start()
    yield server
    server.stop()


@pytest.fixture
def files(fake: FakeSvidServer, tmp_path: Path) -> tuple[Path, Path]:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(fake.ca_pem)
    return token, ca


def channel(fake: FakeSvidServer, files: tuple[Path, Path],
            metrics: AgentMetrics | None = None) -> ServerChannel:
    return ServerChannel(fake.address, server_ca=files[1], server_name="localhost",
                         token_file=files[0], timeout=timedelta(seconds=10), metrics=metrics)


def errors(metrics: AgentMetrics, call: str, code: str) -> float:
    return metrics.registry.get_sample_value(
        "meshca_agent_server_errors_total", {"call": call, "code": code}) or 0.0


def test_bundles_carry_roots_jwt_keys_and_federated_trust_domains(
        fake: FakeSvidServer, files: tuple[Path, Path]) -> None:
    foreign = fake_authority(8)
    fkey = ec_key("secp256r1", 920).public_key()
    fake.federate("b.test", foreign.chain, {"fk": fkey})
    fake.federate("roots-only.test", foreign.chain)

    async def scenario() -> None:
        server = channel(fake, files)
        bundle = await GrpcBundleSource(server, TRUST_DOMAIN).fetch()
        await server.close()
        assert bundle.trust_domain == TRUST_DOMAIN and bundle.roots == (fake.root,)
        assert bundle.jwt_keys == fake.public_jwt_keys()
        assert bundle.refresh_hint == timedelta(seconds=7)
        assert set(bundle.federated) == {"b.test", "roots-only.test"}
        b = bundle.federated["b.test"]
        assert b.roots == foreign.chain and b.jwt_keys == {"fk": fkey}
        assert fake.root not in b.roots

    run(scenario)


def test_a_bad_federated_bundle_is_left_out_and_the_last_good_one_kept(
        fake: FakeSvidServer, files: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    foreign = fake_authority(8)
    fake.federate("b.test", foreign.chain)

    async def scenario() -> None:
        metrics = AgentMetrics()
        server = channel(fake, files, metrics)
        source = GrpcBundleSource(server, TRUST_DOMAIN)
        assert (await source.fetch()).federated["b.test"].roots == foreign.chain
        fake.federated["b.test"] = b"not json"
        fake.federated[TRUST_DOMAIN] = fake.bundle_document()  # names the own trust domain
        fake.federated["c.test"] = json.dumps({"keys": "no"}).encode()
        with caplog.at_level(logging.WARNING):
            again = await source.fetch()
        await server.close()
        assert set(again.federated) == {"b.test"}
        assert again.federated["b.test"].roots == foreign.chain
        assert errors(metrics, "bundles", "bad_federated_bundle") == 3
        assert "keeping the last good one" in caplog.text

    run(scenario)


def test_bundle_failures_are_unavailable_and_an_older_server_falls_back_to_the_file(
        fake: FakeSvidServer, files: tuple[Path, Path]) -> None:
    async def scenario() -> None:
        metrics = AgentMetrics()
        server = channel(fake, files, metrics)
        fallback = FileBundleSource(files[1], TRUST_DOMAIN)
        source = GrpcBundleSource(server, TRUST_DOMAIN, fallback=fallback)
        files[0].write_text("wrong-token")
        with pytest.raises(Unavailable, match="refuses"):
            await source.fetch()
        files[0].write_text(TOKEN)
        fake.unimplemented = True
        from_file = await source.fetch()
        assert from_file.roots == (fake.root,) and not from_file.jwt_keys
        fake.unimplemented = False
        fake.fail_with = grpc.StatusCode.UNAVAILABLE
        with pytest.raises(Unavailable, match="cannot give"):
            await source.fetch()
        await server.close()
        assert errors(metrics, "bundles", "unauthenticated") == 1
        assert errors(metrics, "bundles", "unavailable") == 1

    run(scenario)


def test_mints_a_jwt_svid_for_the_workload(fake: FakeSvidServer,
                                           files: tuple[Path, Path]) -> None:
    async def scenario() -> None:
        server = channel(fake, files)
        minter = GrpcJwtMinter(server)
        svid = await minter.mint(WEB, ("db", "cache"), timedelta(minutes=2))
        await minter.close()
        assert fake.minted == [(WEB.uri, ("db", "cache"), 120)]
        header = json.loads(b64url_decode(svid.token.split(".")[0]))
        assert header == {"alg": "ES256", "kid": fake.kid, "typ": "JWT"}
        assert svid.spiffe_id == WEB and svid.claims["aud"] == ["db", "cache"]
        life = svid.expiry - datetime.now(UTC)
        assert timedelta(seconds=100) < life <= timedelta(minutes=2)

    run(scenario)


def test_mint_failures_and_a_token_for_someone_else(fake: FakeSvidServer,
                                                     files: tuple[Path, Path]) -> None:
    async def scenario() -> None:
        metrics = AgentMetrics()
        server = channel(fake, files, metrics)
        minter = GrpcJwtMinter(server)
        fake.sub_override = "spiffe://cluster.local/ns/kube-system/sa/admin"
        with pytest.raises(PermissionDenied, match="another identity"):
            await minter.mint(WEB, ("db",))
        fake.sub_override = None
        files[0].write_text("wrong-token")
        with pytest.raises(PermissionDenied, match="UNAUTHENTICATED"):
            await minter.mint(WEB, ("db",))
        files[0].write_text(TOKEN)
        fake.unimplemented = True
        with pytest.raises(Unavailable, match="UNIMPLEMENTED"):
            await minter.mint(WEB, ("db",))
        await minter.close()
        assert errors(metrics, "mint_jwt", "bad_token") == 1
        assert errors(metrics, "mint_jwt", "unauthenticated") == 1
        assert errors(metrics, "mint_jwt", "unimplemented") == 1

    run(scenario)


def test_signing_minting_and_bundles_share_one_channel(
        fake: FakeSvidServer, files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    dials: list[str] = []
    real = grpc.aio.secure_channel

    def counting(target: str, *args: Any, **kwargs: Any) -> Any:
        dials.append(target)
        return real(target, *args, **kwargs)

    monkeypatch.setattr(grpc.aio, "secure_channel", counting)

    async def scenario() -> None:
        server = channel(fake, files)
        key = make_key("ec-p256", WEB)
        chain = await GrpcSigner.from_channel(server).sign(WEB, key.csr_pem)
        await GrpcJwtMinter(server).mint(WEB, ("db",))
        await GrpcBundleSource(server, TRUST_DOMAIN).fetch()
        await server.close()
        assert chain[-1] == fake.root
        assert dials == [fake.address]
        assert (fake.signs, fake.mints, fake.bundle_calls) == (1, 1, 1)

    run(scenario)
