"""The IdentityService servicer: translates wire messages to use-case calls and back, nothing else.

Calls made for a user carry its access token as ``authorization: Bearer <token>`` metadata.
Errors are not caught here: meshkit's edge maps them to gRPC statuses once.
"""

from __future__ import annotations

import datetime

import grpc

from identity.app.accounts import Accounts
from identity.app.oauth import AuthorizationServer
from identity.domain.model import Account, Principal
from meshkit import timestamps
from shop.identity.v1 import identity_pb2 as pb
from shop.identity.v1 import identity_pb2_grpc as pb_grpc


def bearer(context: grpc.ServicerContext) -> str:
    """The bearer token of the call's ``authorization`` metadata, or ""."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""


def _time(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    """shop.identity.v1.IdentityService over identity's use cases. Stateless."""

    def __init__(self, accounts: Accounts, oauth: AuthorizationServer) -> None:
        self._accounts = accounts
        self._oauth = oauth

    def _caller(self, context: grpc.ServicerContext) -> Principal:
        return self._oauth.authenticate(bearer(context))

    def Register(
        self, request: pb.RegisterRequest, context: grpc.ServicerContext
    ) -> pb.RegisterResponse:
        """See the contract in proto/shop/identity/v1/identity.proto."""
        return pb.RegisterResponse(user_id=self._accounts.register(request.email, request.password))

    def GetMe(self, request: pb.GetMeRequest, context: grpc.ServicerContext) -> pb.GetMeResponse:
        """See the contract."""
        return pb.GetMeResponse(user=_user(self._accounts.account(self._caller(context).sub)))

    def GrantRole(
        self, request: pb.GrantRoleRequest, context: grpc.ServicerContext
    ) -> pb.GrantRoleResponse:
        """See the contract."""
        caller = self._caller(context)
        return pb.GrantRoleResponse(
            user=_user(self._accounts.grant_role(caller, request.user_id, request.role))
        )

    def BeginMfaEnrollment(
        self, request: pb.BeginMfaEnrollmentRequest, context: grpc.ServicerContext
    ) -> pb.BeginMfaEnrollmentResponse:
        """See the contract."""
        enrollment = self._accounts.begin_mfa(
            self._caller(context), request.password, source=context.peer()
        )
        return pb.BeginMfaEnrollmentResponse(
            otpauth_uri=enrollment.otpauth_uri, qr_png=enrollment.qr_png, secret=enrollment.secret
        )

    def ConfirmMfaEnrollment(
        self, request: pb.ConfirmMfaEnrollmentRequest, context: grpc.ServicerContext
    ) -> pb.ConfirmMfaEnrollmentResponse:
        """See the contract."""
        codes = self._accounts.confirm_mfa(self._caller(context), request.code)
        return pb.ConfirmMfaEnrollmentResponse(recovery_codes=codes)

    def ListSessions(
        self, request: pb.ListSessionsRequest, context: grpc.ServicerContext
    ) -> pb.ListSessionsResponse:
        """See the contract."""
        caller = self._caller(context)
        return pb.ListSessionsResponse(
            sessions=[
                pb.Session(
                    session_id=s.session_id,
                    device=s.device,
                    create_time=timestamps.to_timestamp(_time(s.created_at)),
                    last_seen_time=timestamps.to_timestamp(_time(s.last_seen)),
                    current=s.session_id == caller.session_id,
                )
                for s in self._accounts.sessions(caller)
            ]
        )

    def RevokeSession(
        self, request: pb.RevokeSessionRequest, context: grpc.ServicerContext
    ) -> pb.RevokeSessionResponse:
        """See the contract."""
        self._accounts.revoke_session(self._caller(context), request.session_id)
        return pb.RevokeSessionResponse()

    def RevokeAllSessions(
        self, request: pb.RevokeAllSessionsRequest, context: grpc.ServicerContext
    ) -> pb.RevokeAllSessionsResponse:
        """See the contract."""
        count = self._accounts.revoke_all_sessions(self._caller(context))
        return pb.RevokeAllSessionsResponse(revoked_count=count)

    def IntrospectToken(
        self, request: pb.IntrospectTokenRequest, context: grpc.ServicerContext
    ) -> pb.IntrospectTokenResponse:
        """See the contract."""
        claims = self._oauth.verify(request.token) if request.token else None
        if claims is None:
            return pb.IntrospectTokenResponse(active=False)
        aud = claims.get("aud", [])
        return pb.IntrospectTokenResponse(
            active=True,
            sub=str(claims["sub"]),
            client_id=str(claims.get("client_id", "")),
            scope=str(claims.get("scope", "")),
            roles=[str(r) for r in claims.get("roles", [])],
            expire_time=timestamps.to_timestamp(_time(float(claims["exp"]))),
            session_id=str(claims.get("sid") or ""),
            aud=[aud] if isinstance(aud, str) else [str(a) for a in aud],
        )


def _user(account: Account) -> pb.User:
    return pb.User(
        user_id=account.user_id,
        email=account.email,
        roles=list(account.roles),
        mfa_enabled=account.mfa_enabled,
        create_time=timestamps.to_timestamp(_time(account.created_at)),
    )
