"""People's accounts, managed by admins: create, list, change role or password, disable."""

from __future__ import annotations

import logging
from datetime import datetime

from fastapi import APIRouter, Request

from api.auth import Admin, users
from api.errors import Refusal, refused
from api.keys import Role
from api.schemas import UserCreateIn, UserOut, UserUpdateIn, utc
from api.users import UserInfo
from drivers.errors import PeopleMessage

log = logging.getLogger(__name__)

router = APIRouter(prefix="/users", tags=["users"])


def user_out(user: UserInfo) -> UserOut:
    """The API form of an account."""
    return UserOut(
        username=user.username,
        name=user.name,
        role=user.role.value,
        created_at=utc(user.created_at) or datetime.min,
        disabled=user.disabled,
        locked_until=utc(user.locked_until),
    )


@router.get("", response_model=list[UserOut])
async def list_users(request: Request, _admin: Admin) -> list[UserOut]:
    """Every account."""
    return [user_out(u) for u in await users(request).list()]


@router.post("", status_code=201, response_model=UserOut)
async def create_user(body: UserCreateIn, request: Request, admin: Admin) -> UserOut:
    """A new account; 409 if the username is taken, 422 for a weak password."""
    store = users(request)
    if await store.get(body.username) is not None:
        raise Refusal(
            409,
            f"user {body.username!r} already exists",
            PeopleMessage("refusal.user_exists", {"username": body.username}),
        )
    user = await store.create(body.username, body.name, Role(body.role), body.password)
    log.warning("%s created user %s (%s)", admin.name, user.username, user.role.value)
    return user_out(user)


@router.patch("/{username}", response_model=UserOut)
async def update_user(username: str, body: UserUpdateIn, request: Request, admin: Admin) -> UserOut:
    """Change an account; a new role or password, or disabling it, ends its sessions."""
    try:
        user = await users(request).update(
            username,
            name=body.name,
            role=None if body.role is None else Role(body.role),
            password=body.password,
            disabled=body.disabled,
        )
    except KeyError:
        raise refused(404, f"no user {username!r}", "refusal.no_user", username=username) from None
    changed = ", ".join(
        k for k, v in body.model_dump().items() if v is not None and k != "password"
    )
    if body.password is not None:
        changed = ", ".join(filter(None, [changed, "password"]))
    log.warning("%s changed user %s: %s", admin.name, username, changed or "nothing")
    return user_out(user)
