"""Cross-signed root rotation (core/cross_sign.py) in the zero-downtime harness, and its chains
checked by OpenSSL (`verify -x509_strict`) and Go-style path building with only the old root,
only the new root, and both.

The harness (tests/unit/test_zero_downtime.py) gets a CA that cross-signs each new root with the
active one and serves the cross certificate above intermediates, and workloads pinned to the
bundle they first received: clients that never pick up the new root. Through a whole root
rotation, up to the old root's expiry, not one of their handshakes fails; without cross-signing
(the negative control) they fail from the new root's activation on.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import VerificationError

from meshca.core import cross_sign, templates
from meshca.core.rotation import Kind, State
from meshca.core.spiffe import SpiffeId
from tests.unit.test_zero_downtime import (
    BACKDATE,
    DAY,
    POLICY,
    T0,
    TRUST_DOMAIN,
    CaGeneration,
    Issued,
    Profile,
    SimulatedCa,
    Simulation,
    Workload,
)
from tests.vault.chains import openssl_verify, path_to_root

TD = SpiffeId.for_trust_domain(TRUST_DOMAIN)
PROFILE = Profile(POLICY, root_ttl=36 * DAY, intermediate_ttl=6 * DAY, leaf_ttl=DAY)


class CrossSigningCa(SimulatedCa):
    """Roots with room for a cross certificate; each new root cross-signed by the active one."""

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self.cross: dict[int, x509.Certificate] = {}  # new root id -> its cross certificate

    def _prepare(self, kind: Kind, parent_id: int | None, now: datetime) -> None:
        if kind is not Kind.ROOT:
            super()._prepare(kind, parent_id, now)
            return
        key = ec.generate_private_key(ec.SECP256R1())
        serial = x509.random_serial_number()
        number = 1 + sum(1 for g in self.gens.values() if g.kind is kind)
        subject = templates.ca_subject("meshca simulation", "root", number, serial)
        certificate = templates.ca_certificate(
            public_key=key.public_key(), subject=subject,
            trust_domain=TD, issuer=None, serial=serial, not_before=now - BACKDATE,
            not_after=now + self.profile.root_ttl, path_length=cross_sign.ROOT_PATH_LENGTH,
        ).sign(key, hashes.SHA256())
        gid = 1 + len(self.gens)
        self.gens[gid] = CaGeneration(gid, kind, State.PREPARED, certificate, key, now, None)
        active = [g for g in self.gens.values() if g.kind is Kind.ROOT and g.state is State.ACTIVE]
        if active:  # only the active root signs, here the cross certificate
            old = active[0]
            self.cross[gid] = cross_sign.cross_certificate(
                certificate, old.certificate, trust_domain=TD, serial=x509.random_serial_number(),
                now=now, backdate=BACKDATE).sign(old.key, hashes.SHA256())
            self.events["cross certificates"] += 1
        self.events["root preparations"] += 1
        self._log(now, f"root {gid} prepared and published" + (" (cross-signed)" if active else ""))

    def issue(self, spiffe_id: SpiffeId, public_key: ec.EllipticCurvePublicKey, now: datetime) -> Issued:
        issued = super().issue(spiffe_id, public_key, now)
        root = self.active(Kind.ROOT)
        stored = [self.cross[root.id]] if root.id in self.cross else []
        untainted = [g.certificate for g in self.gens.values()
                     if g.kind is Kind.ROOT and g.state is not State.TAINTED]
        above = cross_sign.served_cross_certificates(stored, untainted, now)
        if above:
            self.events["leaves served with a cross certificate"] += 1
        return dataclasses.replace(issued, chain=(*issued.chain, *above))


@dataclasses.dataclass(eq=False)
class PinnedWorkload(Workload):
    """Keeps the first bundle it was given: never refreshes, ignores bundles in responses."""

    def refresh(self, ca: SimulatedCa) -> None:
        return

    def next_refresh_tick(self, now: datetime, hint: timedelta) -> datetime:
        return now + 100 * 365 * DAY  # no refresh to wait for: no simulation step for it

    def _trust(self, bundle: frozenset[int], bundle_pem: str) -> None:
        if self.bundle_pem:
            bundle, bundle_pem = self.bundle, self.bundle_pem
        super()._trust(bundle, bundle_pem)


def simulation(tmp_path: Path, *, cross: bool, end: datetime) -> Simulation:
    sim = Simulation(PROFILE, tmp_path, end=end, workloads=4)
    if cross:
        sim.ca = CrossSigningCa(PROFILE)
    # w0 and w1 hold only the first root, for ever; w2 and w3 refresh as usual.
    sim.workloads[:2] = [PinnedWorkload(w.name, w.joins_at, w.refresh_phase, w.renew_offset,
                                        w.credentials) for w in sim.workloads[:2]]
    return sim


# The first root: prepared at day 18, the second activated at day 30, the first expires at 36.
BEFORE_OLD_ROOT_EXPIRES = T0 + 36 * DAY - timedelta(hours=2)


def test_clients_pinned_to_the_old_root_never_fail_through_a_cross_signed_rotation(tmp_path: Path) -> None:
    sim = simulation(tmp_path, cross=True, end=BEFORE_OLD_ROOT_EXPIRES)
    out = sim.run()
    print(f"\ncross-signed rotation: {out.steps} steps, {out.handshakes} mutual TLS handshakes, "
          f"{out.renewals} renewals, {out.seconds:.1f} s")
    print("\n".join(f"  {line}" for line in sim.ca.root_timeline))
    assert out.failures == [], f"{len(out.failures)} failed handshakes, first: {out.failures[:3]}"
    assert out.violations == []
    assert out.events["root activations"] == 2 and out.events["cross certificates"] == 1
    assert out.events["leaves served with a cross certificate"] >= 10
    pinned = [w for w in sim.workloads if isinstance(w, PinnedWorkload)]
    first_root = sim.ca.gens[1]
    assert all(w.bundle == frozenset({first_root.id}) for w in pinned)
    assert sim.ca.active(Kind.ROOT).id != first_root.id  # they lived through the switch
    # Their own chains go up to the new root, through the cross certificate.
    for w in pinned:
        assert w.leaf is not None
        assert sim.ca.issued[w.leaf.serial_number][0] in {
            g.id for g in sim.ca.gens.values() if g.parent_id == sim.ca.active(Kind.ROOT).id}


def test_without_cross_signing_pinned_clients_fail_once_the_new_root_signs(tmp_path: Path) -> None:
    """Negative control: the same run with a plain CA."""
    out = simulation(tmp_path, cross=False, end=T0 + 31 * DAY).run()
    assert out.events["root activations"] == 2
    assert out.failures
    pairs = [f.split(": ")[1] for f in out.failures]  # "<time>: <client> -> <server>: <error>"
    assert all({"w0", "w1"} & set(pair.split(" -> ")) for pair in pairs), pairs  # a pinned side
    first = min(f.split(": ")[0] for f in out.failures)
    assert first >= str(T0 + 30 * DAY)  # from the new root's activation on


# ---- the chains themselves: openssl and Go-style path building, old / new / both roots ----------

def _root(name: str, start: datetime,
          path_length: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    serial = x509.random_serial_number()
    cert = templates.ca_certificate(
        public_key=key.public_key(), subject=templates.ca_subject("meshca", name, 1, serial),
        trust_domain=TD, issuer=None, serial=serial, not_before=start, not_after=start + 365 * DAY,
        path_length=path_length).sign(key, hashes.SHA256())
    return cert, key


@pytest.fixture(scope="module")
def rotated() -> dict[str, x509.Certificate]:
    now = datetime.now(T0.tzinfo)
    old, old_key = _root("root", now - 200 * DAY, cross_sign.ROOT_PATH_LENGTH)
    new, new_key = _root("root", now - DAY, cross_sign.ROOT_PATH_LENGTH)
    cross = cross_sign.cross_certificate(new, old, trust_domain=TD, serial=x509.random_serial_number(),
                                         now=now - DAY, backdate=BACKDATE).sign(old_key, hashes.SHA256())
    inter_key = ec.generate_private_key(ec.SECP256R1())
    serial = x509.random_serial_number()
    inter = templates.ca_certificate(
        public_key=inter_key.public_key(), subject=templates.ca_subject("meshca", "intermediate", 1, serial),
        trust_domain=TD, issuer=new, serial=serial, not_before=now - DAY, not_after=now + 6 * DAY,
        path_length=0).sign(new_key, hashes.SHA256())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = templates.leaf_svid(
        public_key=leaf_key.public_key(), spiffe_id=SpiffeId.for_service_account(TRUST_DOMAIN, "a", "b"),
        issuer=inter, serial=x509.random_serial_number(), not_before=now - timedelta(hours=1),
        not_after=now + timedelta(hours=23)).sign(inter_key, hashes.SHA256())
    return {"old": old, "new": new, "cross": cross, "intermediate": inter, "leaf": leaf}


@pytest.mark.parametrize("trusted", [("old",), ("new",), ("old", "new")], ids="+".join)
def test_the_served_chain_verifies_with_either_root_or_both(rotated: dict[str, x509.Certificate],
                                                           trusted: tuple[str, ...]) -> None:
    roots = [rotated[name] for name in trusted]
    served = [rotated["intermediate"], rotated["cross"]]
    checked = openssl_verify(roots, served, rotated["leaf"])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    path = path_to_root(roots, served, rotated["leaf"])
    assert path[0] == rotated["leaf"] and path[1] == rotated["intermediate"]
    assert path[-1] == (rotated["new"] if "new" in trusted else rotated["old"])
    if trusted == ("old",):
        assert path[2] == rotated["cross"]


def test_without_the_cross_certificate_the_old_root_alone_fails(rotated: dict[str, x509.Certificate]) -> None:
    assert openssl_verify([rotated["old"]], [rotated["intermediate"]], rotated["leaf"]).returncode != 0
    with pytest.raises(VerificationError):
        path_to_root([rotated["old"]], [rotated["intermediate"]], rotated["leaf"])


def test_a_root_with_path_length_one_cannot_cross_sign() -> None:
    old, _ = _root("root", T0, 1)
    new, _ = _root("root", T0 + DAY, cross_sign.ROOT_PATH_LENGTH)
    assert not cross_sign.can_cross_sign(old)
    with pytest.raises(ValueError, match="path length"):
        cross_sign.cross_certificate(new, old, trust_domain=TD, serial=1, now=T0 + DAY, backdate=BACKDATE)


def test_a_cross_certificate_is_served_only_under_an_untainted_root_and_until_it_expires(
        rotated: dict[str, x509.Certificate]) -> None:
    cross = rotated["cross"]
    assert cross_sign.served_cross_certificates([cross], [rotated["old"], rotated["new"]]) == (cross,)
    assert cross_sign.served_cross_certificates([cross], [rotated["new"]]) == ()  # old root tainted
    assert cross_sign.served_cross_certificates([cross], [rotated["old"]], cross.not_valid_after_utc) == ()
