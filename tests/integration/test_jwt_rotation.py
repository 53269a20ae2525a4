"""JWT key rotation over time on a real `meshca serve`: no JWT-SVID that is still valid ever
fails validation (PyJWT, the bundle of the moment) while keys rotate and are pruned."""

from __future__ import annotations

import time
from pathlib import Path

import jwt

from meshca.gen.meshca.v1 import svid_pb2, svid_pb2_grpc
from tests.integration.test_jwt_svid import AUD, bundle_of, jwt_generations, jwt_kids
from tests.jwt_validation import validate
from tests.support import start_meshca

# Fast lifetimes (see test_ca_rotation.py's FAST): a JWT key lives 24 s (--intermediate-ttl),
# its successor is published at 12 s and signs from 20 s; tokens live 4 s. The skew covers a
# worker that signs with the old key until its next reload.
FAST_JWT = ("--root-ttl", "1h", "--intermediate-ttl", "24s", "--max-ttl", "4s",
            "--default-ttl", "4s", "--jwt-max-ttl", "4s", "--jwt-default-ttl", "4s",
            "--bundle-publish-lead", "1s", "--bundle-refresh-hint", "0.5s",
            "--rotation-skew", "2s", "--ca-reload-interval", "0.5s")


def test_no_valid_jwt_svid_fails_while_keys_rotate_and_are_pruned(tmp_path: Path) -> None:
    """Mint all along (two workers) while JWT keys are prepared, activated, retired and pruned;
    at every step validate every token not yet expired against the bundle of that moment."""
    server = start_meshca(tmp_path / "data", "--workers", "2", *FAST_JWT)
    try:
        stub = svid_pb2_grpc.SvidServiceStub(server.channel())
        token = server.token()
        live: list[tuple[str, int]] = []
        failures: list[str] = []
        kids_seen: set[str] = set()
        kids_published: list[set[str]] = []
        deadline = time.monotonic() + 32
        mints = 0
        while time.monotonic() < deadline:
            minted = stub.MintJWTSVID(svid_pb2.MintJWTSVIDRequest(audience=[AUD]), timeout=30,
                                      metadata=[("authorization", f"Bearer {token}")])
            mints += 1
            live.append((minted.token, minted.expires_at))
            kids_seen.add(jwt.get_unverified_header(minted.token)["kid"])
            bundle = bundle_of(server)
            kids_published.append(jwt_kids(bundle))
            now = time.time()
            # Tokens within half a second of exp are left alone: "still valid" must not race
            # the test's own clock.
            live = [(t, exp) for t, exp in live if exp > now + 0.5]
            for held, _ in live:
                try:
                    validate(held, bundle, AUD)
                except jwt.InvalidTokenError as exc:
                    failures.append(f"{jwt.get_unverified_header(held)['kid']}: {exc!r}")
            time.sleep(0.1)
        assert failures == [], failures[:5]
        assert len(kids_seen) >= 2, "no JWT key rotation happened in 32 s"
        states = [g["state"] for g in jwt_generations(server)]
        assert states.count("active") == 1 and "retired" in states
        # A retired key was pruned: a kid that was published is gone from the last bundle.
        assert set().union(*kids_published) - kids_published[-1], "no JWT key was pruned"
        assert mints > 50
    finally:
        server.stop()
