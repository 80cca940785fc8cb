"""The sign-in flows: password, then one MFA factor; step-up from the user portal to the admin
portal; passwordless Go. Every attempt on a known account is recorded, and every failed password
or factor counts toward the user's lockout.

A flow's steps:
1. rate limits (per client address and per account),
2. who is signing in (``lookup``), the password or credential checked,
3. whether this identity may open the portal (``rules``), each refusal with its own code,
4. a short-lived challenge naming the factors, completed by exactly one factor,
5. the session, opened in Redis with the identity's auth epoch, and the known-device cookie.

Failures are counted apart for familiar clients (with the identity's known-device cookie: they
count toward the user's lockout) and unfamiliar ones (a temporary block of unfamiliar clients
only), and each failure's answer waits longer than the last (``smart_lockout``).
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

from service.adapters.crypto import token_hash, verify_password
from service.adapters.mfa import webauthn as wa
from service.adapters.mfa.duo import DuoGateway, DuoUnavailable
from service.adapters.sessions import Session
from service.bootstrap import Services
from service.config import Settings
from service.domain.commands import Actor
from service.domain.errors import Conflict, InvalidRequest
from service.domain.model import Admin, Role, User, now
from service.signin import duo_settings, known_devices, lockout, lookup, records, rules, smart_lockout, verify
from service.signin.challenges import (
    ADMIN_LOGIN,
    GO,
    MAX_FAILURES,
    STEP_UP,
    USER_LOGIN,
    Challenge,
    ChallengeStore,
    PendingStore,
)
from service.signin.errors import (
    Unauthorized,
    Unavailable,
    challenge_expired,
    go_not_allowed,
    invalid_credentials,
)
from service.signin.lookup import Who
from service.signin.pushes import PENDING, PushRequest, PushStore
from service.signin.records import ADMIN_PORTAL, USER_PORTAL, ClientInfo
from service.signin.smart_lockout import Lane, SmartLockout
from service.signin.throttle import Throttle, account_key, user_key
from service.signin.verify import Outcome
from service.unit_of_work import ReadOnlyUnitOfWork, UnitOfWork


@dataclass(frozen=True)
class MfaRequired:
    challenge_id: str
    factors: list[str]
    expires_in: int


@dataclass(frozen=True)
class SignedIn:
    token: str
    portal_session: Session  # the sign-in session it opened (not a database session)
    identity: Admin | User
    client: str  # web | mobile
    device_cookie: tuple[str, str] | None = None  # (name, value) after a sign-in with MFA


@dataclass(frozen=True)
class Pending:
    push_id: str
    expires_in: int


@functools.cache
def relying_party(settings: Settings) -> wa.RelyingParty:
    return wa.RelyingParty.from_settings(settings)


@functools.cache
def known_device_cookies(settings: Settings) -> known_devices.KnownDevices:
    return known_devices.KnownDevices(settings.secret_key, settings.known_device_days * 86400)


def _identity(who: Who) -> Admin | User:
    """The identity whose email keys its sign-in limits: the user, or a classic admin."""
    identity = who.user or who.admin
    assert identity is not None
    return identity


def _system(org_id: str) -> Actor:
    # Placeholder until the identity is loaded; records are written with the signing-in actor.
    return Actor(org_id, "signin", "system", Role.READ_ONLY, source="signin")


class Signin:
    def __init__(self, services: Services) -> None:
        settings = services.settings
        self.services = services
        self.settings = settings
        self.challenges = ChallengeStore(services.redis, settings.signin_challenge_seconds)
        self.pending = PendingStore(services.redis)
        self.pushes = PushStore(services.redis, settings.push_ttl_seconds)
        self.throttle = Throttle(services.redis, settings.signin_rate_window_seconds,
                                 settings.signin_rate_per_account, settings.signin_rate_per_ip)
        self.smart = SmartLockout(services.redis, settings.lockout_threshold,
                                  settings.signin_unfamiliar_block_seconds, settings.signin_delay_base_seconds,
                                  settings.signin_delay_cap_seconds)
        self.devices = known_device_cookies(settings)
        self.rp = relying_party(settings)
        self.duo = DuoGateway(settings.duo_redirect_uri, settings.duo_ca_bundle, settings.duo_api_hosts)

    # --- password ---------------------------------------------------------------------------

    async def password_step(self, portal: str, identifier: str, password: str, org_id: str | None,
                            client: ClientInfo) -> MfaRequired | SignedIn:
        """``identifier``: the username or the email typed (``lookup.resolve``)."""
        await self.throttle.hit(ip=client.ip, account=None)
        async with self.services.read_only() as reads:
            who = await lookup.resolve(reads, portal, identifier, org_id)
        # The account's limit and lanes are keyed by the identity found, so its username and its
        # email (with or without the organization) share one budget; what matches nothing is keyed
        # by what was typed, an unfamiliar lane like any other, so the block tells nothing.
        await self.throttle.hit(ip=None, account=self._account_key(who, identifier, org_id))
        lane = self._lane(who, client) if who else smart_lockout.unfamiliar(identifier)
        await self.smart.ensure_open(lane)  # before the password: a blocked lane is no oracle
        # Argon2 is slow on purpose; it runs off the event loop. An unknown identifier is checked
        # against a dummy hash, so it takes as long as a wrong password.
        right = await asyncio.to_thread(verify_password, who.password_hash if who else None, password)
        if who is None or not right:
            if who is not None:
                await self._record_failure(who, portal, client, None, Outcome(False), lane)
            await self._slow_down(lane)
            raise invalid_credentials()
        await self._ensure_allowed(who, portal, client, None)
        factors = await self._factors(who, portal)
        if not factors:
            if portal == USER_PORTAL:  # a user without MFA signs in to the user portal to enroll
                return await self._succeed_without_factor(who, client, lane)
            await self._record(who, portal, client, None, success=False, error_code="mfa_not_enrolled")
            raise Conflict("mfa_not_enrolled", "the admin portal needs an MFA factor; enroll one in the user portal")
        purpose = ADMIN_LOGIN if portal == ADMIN_PORTAL else USER_LOGIN
        return await self._challenge(purpose, who, portal, factors, client)

    async def _succeed_without_factor(self, who: Who, client: ClientInfo, lane: Lane) -> SignedIn:
        async with self.services.uow(_system(who.organization_id)) as uow:
            assert who.user is not None
            user = await uow.users.get(who.organization_id, who.user.id, for_update=True)
            if user is None:
                raise invalid_credentials()
            who = Who(who.organization_id, user, None)
            uow.actor = records.actor_for(who.organization_id, USER_PORTAL, client, user=user, admin=None)
            user.record_successful_login()
            uow.collect(*records.attempts(uow.actor, USER_PORTAL, user=user, admin=None, success=True,
                                          factor="password"))
            await uow.commit()
        await self.smart.clear(lane)
        return await self.open_session(who, USER_PORTAL, "password", client.kind)

    async def _factors(self, who: Who, portal: str) -> list[str]:
        """The factors this sign-in may complete with (never Go: Go is offered only by step-up)."""
        if who.classic_admin:
            assert who.admin is not None
            return ["totp"] if who.admin.totp_secret else []
        assert who.user is not None
        async with self.services.read_only() as reads:
            factors = await reads.factors.enrolled(who.organization_id, who.user.id)
            if "duo" in factors and await duo_settings.application(
                    reads.duo_settings, self.services.box, who.organization_id) is None:
                factors.remove("duo")  # enrolled, but the organization has no Duo application now
        return factors

    async def _challenge(self, purpose: str, who: Who, portal: str, factors: list[str], client: ClientInfo,
                         user_session: str | None = None) -> MfaRequired:
        challenge = Challenge(
            purpose=purpose, organization_id=who.organization_id, portal=portal, factors=factors,
            client=client.kind, client_ip=client.ip, useragent=client.useragent,
            user_id=who.user.id if who.user else None, admin_id=who.admin.id if who.admin else None,
            user_epoch=who.user.auth_epoch if who.user else None,
            admin_epoch=who.admin.auth_epoch if who.admin else None, user_session=user_session,
        )
        token = await self.challenges.create(challenge)
        return MfaRequired(token, factors, challenge.expires_in)

    # --- refusals, failures and records -----------------------------------------------------

    @staticmethod
    def _account_key(who: Who | None, identifier: str, org_id: str | None) -> str:
        if who is None:
            return account_key(identifier, org_id)
        return account_key(_identity(who).email, who.organization_id)

    def _lane(self, who: Who, client: ClientInfo) -> Lane:
        """Where this client's failures on this identity count: its familiar lane when the client
        carries the identity's known-device cookie, else the unfamiliar lane of its email."""
        subject = known_devices.subject(who)
        if self.devices.recognises(dict(client.device_cookies), subject):
            return smart_lockout.familiar(subject)
        return smart_lockout.unfamiliar(_identity(who).email)

    async def _slow_down(self, lane: Lane) -> None:
        """Counts a failure in its lane, then holds its answer back for the lane's delay."""
        await smart_lockout.hold_back(await self.smart.count(lane))

    async def _ensure_allowed(self, who: Who, portal: str, client: ClientInfo, factor: str | None) -> None:
        refusal = rules.refusal(who, portal)
        if refusal is not None:
            await self._record(who, portal, client, factor, success=False, error_code=refusal.code)
            raise refusal

    async def _record(self, who: Who, portal: str, client: ClientInfo, factor: str | None, *, success: bool,
                      error_code: str | None = None) -> None:
        actor = records.actor_for(who.organization_id, portal, client, user=who.user, admin=who.admin)
        async with self.services.uow(actor) as uow:
            uow.collect(*records.attempts(actor, portal, user=who.user, admin=who.admin, success=success,
                                          factor=factor, error_code=error_code))
            await uow.commit()

    async def _record_failure(self, who: Who, portal: str, client: ClientInfo, factor: str | None,
                              outcome: Outcome, lane: Lane) -> None:
        async with self.services.uow(_system(who.organization_id)) as uow:
            await self._count_failure(uow, who, portal, client, factor, outcome, lane)
            await uow.commit()

    async def _count_failure(self, uow: UnitOfWork, who: Who, portal: str, client: ClientInfo,
                             factor: str | None, outcome: Outcome, lane: Lane) -> None:
        """The records, and, from a familiar client, one more consecutive failure on the user and
        the lockout when it reaches the threshold (a classic admin has no user: rate limits and
        delays guard it). An unfamiliar client's failures count in its lane only (``_slow_down``)."""
        user = who.user
        if user is not None:
            user = await uow.users.get(who.organization_id, user.id, for_update=True) or user
        uow.actor = records.actor_for(who.organization_id, portal, client, user=user, admin=who.admin)
        uow.collect(*records.attempts(uow.actor, portal, user=user, admin=who.admin, success=False,
                                      factor=factor, error_code=outcome.record_code))
        if user is not None and outcome.counts and lane.familiar:
            await lockout.count_failure(uow, user, self.settings.lockout_threshold)

    # --- challenges: start a factor, complete with it ---------------------------------------

    async def load(self, token: str, purposes: tuple[str, ...]) -> tuple[str, Challenge]:
        key = ChallengeStore.key_of(token)
        challenge = await self.challenges.get(key)
        if challenge is None or challenge.purpose not in purposes:
            raise challenge_expired()
        return key, challenge

    def _ensure_bound(self, challenge: Challenge, user_session: str | None) -> None:
        """A step-up challenge completes only with the user-portal session that asked for it."""
        if challenge.user_session is not None and (
                user_session is None or token_hash(user_session) != challenge.user_session):
            raise challenge_expired()

    async def _ensure_offered(self, challenge: Challenge, factor: str, client: ClientInfo) -> None:
        if factor not in rules.FACTORS:
            raise InvalidRequest("invalid_factor", f"factor must be one of: {', '.join(rules.FACTORS)}")
        if factor in challenge.factors:
            return
        if factor == GO and challenge.portal == ADMIN_PORTAL:
            async with self.services.read_only() as reads:
                who = await self._identities(reads, challenge)
            await self._record(who, challenge.portal, client, GO, success=False, error_code="go_not_allowed")
            raise go_not_allowed()
        offered = ", ".join(challenge.factors)
        raise InvalidRequest("factor_not_enrolled", f"this sign-in can be completed with: {offered}")

    def _account(self, challenge: Challenge) -> str | None:
        if challenge.user_id:
            return user_key(challenge.organization_id, challenge.user_id)
        return user_key(challenge.organization_id, challenge.admin_id) if challenge.admin_id else None

    async def start(self, token: str, purposes: tuple[str, ...], factor: str, client: ClientInfo,
                    user_session: str | None = None) -> dict[str, Any]:
        key, challenge = await self.load(token, purposes)
        self._ensure_bound(challenge, user_session)
        await self._ensure_offered(challenge, factor, client)
        await self.throttle.hit(ip=client.ip, account=self._account(challenge))
        if factor in rules.WEBAUTHN_FACTORS:
            return await self._start_webauthn(key, challenge, factor)
        if factor == "push":
            return await self._start_push(key, challenge)
        if factor == "duo":
            return await self._start_duo(key, challenge)
        return {"factor": factor}  # TOTP: nothing to prepare

    async def _start_webauthn(self, key: str, challenge: Challenge, factor: str) -> dict[str, Any]:
        assert challenge.user_id is not None
        async with self.services.read_only() as reads:
            rows = await reads.webauthn.all_of_user(challenge.organization_id, challenge.user_id,
                                                    verify.attachment_for(factor))
        options, raw = wa.authentication_options(self.rp, [(r.credential_id, r.transports or []) for r in rows])
        challenge.started_factor, challenge.webauthn_challenge = factor, wa.encode_challenge(raw)
        await self.challenges.save(key, challenge)
        return {"factor": factor, "options": options}

    async def _start_push(self, key: str, challenge: Challenge) -> dict[str, Any]:
        assert challenge.user_id is not None
        push = await self.pushes.send(challenge.organization_id, challenge.user_id, key, challenge.portal,
                                      challenge.client_ip, challenge.useragent)
        challenge.started_factor, challenge.push_id = "push", push.id
        await self.challenges.save(key, challenge)
        return {"factor": "push", "push_id": push.id, "expires_in": max(0, int(push.expires_at - now().timestamp()))}

    async def _start_duo(self, key: str, challenge: Challenge) -> dict[str, Any]:
        assert challenge.user_id is not None
        async with self.services.read_only() as reads:
            app = await duo_settings.application(reads.duo_settings, self.services.box, challenge.organization_id)
            username = await reads.duo.username(challenge.organization_id, challenge.user_id)
        if app is None or username is None:
            raise Conflict("duo_not_configured", "Duo is not configured for this organization")
        try:
            prompt = await self.duo.prompt(app, username)
        except DuoUnavailable as exc:
            raise Unavailable("duo_unavailable", "Duo does not answer; use another factor or retry") from exc
        challenge.started_factor, challenge.duo_state, challenge.duo_nonce = "duo", prompt.state, prompt.nonce
        await self.challenges.save(key, challenge)
        await self.challenges.link_duo_state(prompt.state, key)
        return {"factor": "duo", "redirect_url": prompt.url}

    async def complete(self, token: str, purposes: tuple[str, ...], factor: str, proof: dict[str, Any],
                       client: ClientInfo, user_session: str | None = None) -> SignedIn | Pending:
        key, challenge = await self.load(token, purposes)
        return await self.complete_loaded(key, challenge, factor, proof, client, user_session)

    async def complete_duo_callback(self, state: str, duo_code: str, client: ClientInfo,
                                    user_session: str | None) -> SignedIn | Pending:
        """Duo's redirect back: the state names the sign-in it belongs to."""
        key = await self.challenges.key_for_duo_state(state)
        challenge = await self.challenges.get(key) if key else None
        if key is None or challenge is None:
            raise challenge_expired()
        return await self.complete_loaded(key, challenge, "duo", {"state": state, "duo_code": duo_code}, client,
                                          user_session)

    async def complete_loaded(self, key: str, challenge: Challenge, factor: str, proof: dict[str, Any],
                              client: ClientInfo, user_session: str | None) -> SignedIn | Pending:
        self._ensure_bound(challenge, user_session)
        await self._ensure_offered(challenge, factor, client)
        if challenge.started_factor != factor and factor != "totp":
            raise InvalidRequest("factor_not_started", f"start {factor} for this sign-in first")
        push, push_status = None, None
        if factor == "push":
            push, push_status = await self._push_state(key, challenge)
            if push_status == PENDING:  # polling while the device has not answered is not an attempt
                return Pending(push.id, max(0, int(push.expires_at - now().timestamp())))
        await self.throttle.hit(ip=client.ip, account=self._account(challenge))
        async with self.services.uow(_system(challenge.organization_id)) as uow:
            who = await self._reload(uow, key, challenge, client, factor)
            lane = self._lane(who, client)
            await self.smart.ensure_open(lane)
            outcome = await self._check(uow, challenge, who, factor, proof, push, push_status)
            if not outcome.ok:
                await self._count_failure(uow, who, challenge.portal, client, factor, outcome, lane)
                await uow.commit()
                await self._after_failure(key, challenge)
                if outcome.counts:
                    await self._slow_down(lane)
                if outcome.record_code == "push_expired":
                    raise Unauthorized("push_expired", "the push was not answered in time; send a new one")
                raise invalid_credentials()
            if not await self.challenges.claim(key):  # completed once, by whoever deleted it first
                raise challenge_expired()
            if who.user is not None:
                who.user.record_successful_login()
            uow.collect(*records.attempts(uow.actor, challenge.portal, user=who.user, admin=who.admin,
                                          success=True, factor=factor))
            await uow.commit()
        if push is not None:
            await self.pushes.finish(push)
        await self.smart.clear(lane)
        return await self.open_session(who, challenge.portal, factor, challenge.client, remember_device=True)

    async def _push_state(self, key: str, challenge: Challenge) -> tuple[PushRequest, str]:
        push = await self.pushes.get(challenge.push_id) if challenge.push_id else None
        if push is None or push.challenge_key != key:
            raise InvalidRequest("factor_not_started", "send a push for this sign-in first")
        return push, await self.pushes.status(push)

    async def _check(self, uow: UnitOfWork, challenge: Challenge, who: Who, factor: str, proof: dict[str, Any],
                     push: PushRequest | None, push_status: str | None) -> Outcome:
        if factor == "totp":
            return await verify.check_totp(uow, who, proof.get("code"))
        if factor in rules.WEBAUTHN_FACTORS:
            assert who.user is not None and challenge.webauthn_challenge is not None
            return await verify.check_assertion(uow, self.rp, who.organization_id, who.user.id,
                                                verify.attachment_for(factor), proof.get("credential"),
                                                challenge.webauthn_challenge)
        if factor == "push":
            assert push is not None and push_status is not None
            return verify.check_push(push, push_status)
        return await verify.check_duo(uow, self.duo, challenge, proof)

    async def _after_failure(self, key: str, challenge: Challenge) -> None:
        challenge.failures += 1
        if challenge.failures >= MAX_FAILURES:
            await self.challenges.claim(key)  # too many wrong factors: the password again
        else:
            await self.challenges.save(key, challenge)

    async def _identities(self, reads: ReadOnlyUnitOfWork, challenge: Challenge) -> Who:
        org = challenge.organization_id
        user = await reads.users.get(org, challenge.user_id) if challenge.user_id else None
        admin = await reads.admins.get(org, challenge.admin_id) if challenge.admin_id else None
        return Who(org, user, admin)

    async def _reload(self, uow: UnitOfWork, key: str, challenge: Challenge, client: ClientInfo,
                      factor: str) -> Who:
        """The identities again, as they are now: a suspension, lock, role removal or deletion
        since the password step refuses the sign-in with its own code."""
        org = challenge.organization_id
        user = await uow.users.get(org, challenge.user_id, for_update=True) if challenge.user_id else None
        admin = await uow.admins.get(org, challenge.admin_id) if challenge.admin_id else None
        if (challenge.user_id and user is None) or (user is None and admin is None):
            await self.challenges.claim(key)
            raise challenge_expired()
        who = Who(org, user, admin)
        uow.actor = records.actor_for(org, challenge.portal, client, user=user, admin=admin)
        refusal = rules.refusal(who, challenge.portal)
        if refusal is not None:
            uow.collect(*records.attempts(uow.actor, challenge.portal, user=user, admin=admin, success=False,
                                          factor=factor, error_code=refusal.code))
            await uow.commit()
            await self.challenges.claim(key)
            raise refusal
        # Any other change that ended the identity's sessions (a role change, a new password)
        # ends the sign-ins under way too.
        if (user is not None and user.auth_epoch != challenge.user_epoch) or (
                admin is not None and admin.auth_epoch != challenge.admin_epoch):
            await self.challenges.claim(key)
            raise challenge_expired()
        return who

    # --- sessions ---------------------------------------------------------------------------

    async def open_session(self, who: Who, portal: str, factor: str, client_kind: str, *,
                           remember_device: bool = False) -> SignedIn:
        """The session; with ``remember_device`` (a sign-in completed with MFA) also the
        known-device cookie that makes this client familiar to the identity."""
        identity: Admin | User | None = who.admin if portal == ADMIN_PORTAL else who.user
        assert identity is not None
        kind = "admin" if portal == ADMIN_PORTAL else "user"
        session = Session(kind, identity.id, who.organization_id, identity.auth_epoch, portal, factor,
                          now().isoformat())
        token = await self.services.sessions.open(session)
        device = self.devices.issue(known_devices.subject(who)) if remember_device else None
        return SignedIn(token, session, identity, client_kind, device)

    # --- step-up: the admin portal from a user-portal session --------------------------------

    async def launch_admin_portal(self, user_session_token: str, session: Session, user: User,
                                  client: ClientInfo) -> MfaRequired:
        """A fresh factor is asked even though the user is signed in. Go is offered only when the
        user-portal session itself was signed in with Go (the seed's note on Go)."""
        await self.throttle.hit(ip=client.ip, account=user_key(user.organization_id, user.id))
        async with self.services.read_only() as reads:
            admin = await reads.admins.by_linked_user(user.organization_id, user.id)
        who = Who(user.organization_id, user, admin)
        await self._ensure_allowed(who, ADMIN_PORTAL, client, None)
        factors = await self._factors(who, ADMIN_PORTAL)
        if session.factor == GO:
            factors.append(GO)
        if not factors:
            await self._record(who, ADMIN_PORTAL, client, None, success=False, error_code="mfa_not_enrolled")
            raise Conflict("mfa_not_enrolled", "the admin portal needs an MFA factor; enroll one first")
        return await self._challenge(STEP_UP, who, ADMIN_PORTAL, factors, client, token_hash(user_session_token))

    # --- Go: passwordless sign-in to the user portal -----------------------------------------

    async def go_options(self, client: ClientInfo) -> tuple[str, dict[str, Any]]:
        """Usernameless: the options name no credential, the device offers its own, and nothing
        in the answer depends on who might be signing in."""
        await self.throttle.hit(ip=client.ip, account=None)
        options, raw = wa.authentication_options(self.rp, [])
        challenge = Challenge(purpose=GO, organization_id="", portal=USER_PORTAL, factors=[GO], client=client.kind,
                              client_ip=client.ip, useragent=client.useragent, started_factor=GO,
                              webauthn_challenge=wa.encode_challenge(raw))
        return await self.challenges.create(challenge), options

    async def go_complete(self, token: str, credential: Any, client: ClientInfo) -> SignedIn:
        key, challenge = await self.load(token, (GO,))
        await self.throttle.hit(ip=client.ip, account=None)
        owner = await self._platform_credential_owner(credential)
        if owner is None:
            raise invalid_credentials()
        org_id, user_id = owner
        await self.throttle.hit(ip=None, account=user_key(org_id, user_id))
        challenge.organization_id, challenge.user_id = org_id, user_id
        async with self.services.uow(_system(org_id)) as uow:
            user = await uow.users.get(org_id, user_id, for_update=True)
            if user is None:
                raise invalid_credentials()
            who = Who(org_id, user, None)
            uow.actor = records.actor_for(org_id, USER_PORTAL, client, user=user, admin=None)
            lane = self._lane(who, client)
            await self.smart.ensure_open(lane)
            assert challenge.webauthn_challenge is not None
            outcome = await verify.check_assertion(uow, self.rp, org_id, user_id, wa.PLATFORM, credential,
                                                   challenge.webauthn_challenge)
            if outcome.ok and wa.user_handle_of(credential) not in (None, user.id):
                outcome = Outcome(False, "webauthn_user_mismatch")
            if not outcome.ok:
                await self._count_failure(uow, who, USER_PORTAL, client, GO, outcome, lane)
                await uow.commit()
                await self._after_failure(key, challenge)
                if outcome.counts:
                    await self._slow_down(lane)
                raise invalid_credentials()
            refusal = rules.refusal(who, USER_PORTAL)
            if refusal is not None:
                uow.collect(*records.attempts(uow.actor, USER_PORTAL, user=user, admin=None, success=False,
                                              factor=GO, error_code=refusal.code))
                await uow.commit()
                raise refusal
            if not await self.challenges.claim(key):
                raise challenge_expired()
            user.record_successful_login()
            uow.collect(*records.attempts(uow.actor, USER_PORTAL, user=user, admin=None, success=True, factor=GO))
            await uow.commit()
        await self.smart.clear(lane)
        return await self.open_session(who, USER_PORTAL, GO, challenge.client, remember_device=True)

    async def _platform_credential_owner(self, credential: Any) -> tuple[str, str] | None:
        """The one lookup of Go not scoped to an organization: the credential id names it."""
        credential_id = wa.credential_id_of(credential)
        if credential_id is None:
            return None
        async with self.services.read_only() as reads:
            return await reads.webauthn.owner(credential_id, wa.PLATFORM)
