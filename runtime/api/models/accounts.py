"""Sign-up, login, tokens and who the caller is."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, StringConstraints, field_validator

from runtime.api.models.base import UNSTORABLE_CHARS, In, Out
from runtime.api.principal import Scope

# One pattern in the OpenAPI document and in the check.
_EMAIL_CHAR = rf"[^@\s{UNSTORABLE_CHARS}]"
EMAIL_PATTERN = rf"^{_EMAIL_CHAR}{{1,64}}@{_EMAIL_CHAR}+\.{_EMAIL_CHAR}+$"
_EMAIL = re.compile(EMAIL_PATTERN)

Email = Annotated[
    str,
    Field(
        min_length=3,
        max_length=254,
        description="an email address (compared case-insensitively)",
        json_schema_extra={"format": "email", "pattern": EMAIL_PATTERN},
    ),
]
# Passwords are taken exactly as typed (the models strip other text).
Password = Annotated[str, StringConstraints(strip_whitespace=False, min_length=10, max_length=200)]


def _check_email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("is not an email address")
    return value.lower()


class SignupIn(In):
    org_name: str = Field(min_length=1, max_length=200)
    email: Email
    password: Password
    referral_code: str | None = Field(
        default=None,
        min_length=4,
        max_length=40,
        description="another org's referral code (with referrals on, an unknown one is 422)",
    )

    _email = field_validator("email")(_check_email)


class LoginIn(In):
    email: Email
    password: Annotated[
        str, StringConstraints(strip_whitespace=False, min_length=1, max_length=200)
    ]

    _email = field_validator("email")(_check_email)


class RefreshIn(In):
    refresh_token: str = Field(min_length=1, max_length=200)


class OrgOut(Out):
    id: UUID
    name: str
    referral_code: str
    created_at: datetime


class UserOut(Out):
    id: UUID
    email: str
    role: str
    created_at: datetime


class TokensOut(Out):
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - a scheme name, not a secret
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_at: datetime


class AuthOut(TokensOut):
    org: OrgOut
    user: UserOut


class MeOut(Out):
    org: OrgOut
    user: UserOut | None
    api_key_id: UUID | None
    scopes: list[Scope] = Field(description="what the caller may do (a user: every scope)")
