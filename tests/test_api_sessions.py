"""People log in with a username and password: a session cookie (HttpOnly, SameSite,
Secure), a CSRF token for every change, lockout after wrong passwords, accounts
managed by admins and by ``streetsense users``."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.cli import main as cli
from api.keys import Role
from api.remembered import Remembered
from api.users import UserStore
from controller.config import LoadedConfig
from controller.runtime import Controller
from controller.state.legacy import opened_state
from tests.helpers import ROOT, api_client, on_own_loop, role_headers
from tests.test_operations import small_city

WriteConfig = Callable[[dict[str, Any]], LoadedConfig]
PASSWORD = "Hai-Bin 2026 lights"


def add_user(loaded: LoadedConfig, username: str, role: Role, password: str = PASSWORD) -> None:
    async def create() -> None:
        async with opened_state(loaded) as db:
            await UserStore(db).create(username, f"{username} (test)", role, password)

    on_own_loop(create)


def logs_in(loaded: LoadedConfig, username: str) -> bool:
    """Whether the user gets a session with the test password."""

    async def login() -> bool:
        async with opened_state(loaded) as db:
            return (await UserStore(db).login(username, PASSWORD)).session is not None

    return on_own_loop(login)


def cookie_of(response: httpx.Response) -> dict[str, str]:
    """Headers that carry the session cookie the login set, and send no key."""
    token = response.cookies.get("ss_session")
    assert token, response.headers
    return {"Cookie": f"ss_session={token}", "X-Anonymous": "1"}


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post(
        "/session/login", json={"username": username, "password": password}, headers=ANON
    )


ANON = {"X-Anonymous": "1"}


async def test_a_person_logs_in_and_a_change_needs_the_sessions_csrf_token(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(small_city(tmp_path))
    add_user(loaded, "chen", Role.ENGINEER)
    add_user(loaded, "zhou", Role.VIEWER)
    async with Controller(loaded) as controller, api_client(controller) as client:
        await controller.open_stores()
        for username, password in (("chen", "wrong password 1"), ("nobody", PASSWORD)):
            refused = await login(client, username, password)
            # Who exists is not told: the same answer for a wrong password and no user.
            assert refused.status_code == 401, refused.text
            assert refused.json()["detail"] == "wrong username or password"
            # The same refusal in the catalogue's words, for the console to show.
            assert refused.json()["message"] == {"key": "refusal.wrong_login", "params": {}}
            assert "set-cookie" not in refused.headers

        opened = await login(client, "chen", PASSWORD)
        assert opened.status_code == 200, opened.text
        body = opened.json()
        assert (body["name"], body["role"], body["may"]["control"]) == (
            "chen (test)",
            "engineer",
            True,
        )
        set_cookie = opened.headers["set-cookie"].lower()
        for flag in ("httponly", "samesite=strict", "secure", "path=/"):
            assert flag in set_cookie, set_cookie
        assert opened.cookies["ss_session"] not in opened.text  # the token stays in the cookie
        session = cookie_of(opened)
        csrf = {**session, "X-CSRF-Token": body["csrf_token"]}

        me = (await client.get("/whoami", headers=session)).json()
        assert (me["name"], me["csrf_token"]) == ("chen (test)", body["csrf_token"])
        assert (await client.get("/alarms", headers=session)).status_code == 200

        # A change with the cookie alone is what a forged cross-site form would send.
        forged = await client.post("/session/ticket", headers=session)
        assert forged.status_code == 403 and "X-CSRF-Token" in forged.text
        wrong = await client.post("/session/ticket", headers={**session, "X-CSRF-Token": "x"})
        assert wrong.status_code == 403
        ticket = await client.post("/session/ticket", headers=csrf)
        assert ticket.status_code == 200
        events = await client.get(
            "/alarms", params={"ticket": ticket.json()["ticket"]}, headers=ANON
        )
        assert events.status_code == 200

        # Roles hold for people as for keys.
        viewer = await login(client, "zhou", PASSWORD)
        viewer_csrf = {**cookie_of(viewer), "X-CSRF-Token": viewer.json()["csrf_token"]}
        switch = {"action": "on", "targets": {"all": True}}
        refused = await client.post("/control/lamps", json=switch, headers=viewer_csrf)
        assert refused.status_code == 403 and "viewer" in refused.text

        assert (await client.post("/session/logout", headers=csrf)).status_code == 204
        ended = await client.get("/whoami", headers=session)
        assert ended.status_code == 401 and "log in again" in ended.text
        # The other person's session is untouched.
        assert (await client.get("/whoami", headers=cookie_of(viewer))).status_code == 200


async def test_five_wrong_passwords_lock_the_account_even_against_the_right_one(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(small_city(tmp_path))
    add_user(loaded, "huang", Role.FLOOD_DUTY)
    admin = role_headers(loaded)["admin"]
    async with Controller(loaded) as controller, api_client(controller) as client:
        for attempt in range(5):
            wrong = await login(client, "huang", f"guess number {attempt}")
            assert wrong.status_code == (401 if attempt < 4 else 429), (attempt, wrong.text)
        locked = await login(client, "huang", PASSWORD)
        assert locked.status_code == 429 and "locked for 15 min" in locked.text
        assert locked.json()["message"] == {
            "key": "refusal.account_locked",
            "params": {"minutes": 15},
        }
        assert int(locked.headers["Retry-After"]) > 800
        [user] = (await client.get("/users", headers=admin)).json()
        assert user["locked_until"] is not None
        # An admin who has checked with the person lifts the lock.
        lifted = await client.patch("/users/huang", json={"disabled": False}, headers=admin)
        assert lifted.status_code == 200 and lifted.json()["locked_until"] is None
        assert (await login(client, "huang", PASSWORD)).status_code == 200


async def test_admins_manage_accounts_and_a_new_role_or_disabling_ends_sessions(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    loaded = write_config(small_city(tmp_path))
    key = role_headers(loaded)
    async with Controller(loaded) as controller, api_client(controller) as client:
        new = {"username": "li.wei", "name": "李伟", "role": "dispatcher", "password": PASSWORD}
        refused = await client.post("/users", json=new, headers=key["dispatcher"])
        assert refused.status_code == 403
        # Each refusal in English for machines, and in the catalogue's words for people.
        for wrong, reason, words in (
            ({"password": "short"}, "at least 10 characters", ("password_too_short", {"min": 10})),
            (
                {"password": "li.wei-li.wei-2026"},
                "may not contain the username",
                ("password_has_username", {}),
            ),
            (
                {"password": "abababababab"},
                "4 different characters",
                ("password_too_plain", {"min": 4}),
            ),
            ({"username": "Li Wei"}, "a username is", ("username_invalid", {})),
        ):
            bad = await client.post("/users", json={**new, **wrong}, headers=key["admin"])
            assert bad.status_code == 422 and reason in bad.text, bad.text
            key_, params = words
            assert bad.json()["message"] == {"key": f"refusal.{key_}", "params": params}
        # Refused by validation: the kind of error and its bound, for a console to word.
        catalogue = json.loads((ROOT / "controller" / "messages.json").read_text("utf-8"))
        for odd, loc, kind, ctx in (
            ({"role": "reporter"}, "role", "literal_error", {"expected"}),
            ({"username": "l"}, "username", "string_too_short", {"min_length"}),
            ({"password": None}, "password", "string_type", set()),
        ):
            bad = await client.post("/users", json={**new, **odd}, headers=key["admin"])
            assert bad.status_code == 422, bad.text
            [issue] = bad.json()["detail"]
            assert issue["loc"] == ["body", loc] and issue["type"] == kind, issue
            assert set(issue["ctx"]) >= ctx and "input" not in issue, issue
            # The catalogue words it with the context the API gives.
            words = catalogue[f"validation.{kind}"]["zh"]
            assert set(re.findall(r"\{(\w+)\}", words)) <= set(issue["ctx"]), (words, issue)
        created = await client.post("/users", json=new, headers=key["admin"])
        assert created.status_code == 201, created.text
        assert "password" not in created.text and created.json()["name"] == "李伟"
        again = await client.post("/users", json=new, headers=key["admin"])
        assert again.status_code == 409
        assert again.json()["message"] == {
            "key": "refusal.user_exists",
            "params": {"username": "li.wei"},
        }

        session = cookie_of(await login(client, "li.wei", PASSWORD))
        assert (await client.get("/whoami", headers=session)).json()["role"] == "dispatcher"
        promoted = await client.patch(
            "/users/li.wei", json={"role": "engineer"}, headers=key["admin"]
        )
        assert promoted.status_code == 200 and promoted.json()["role"] == "engineer"
        assert (await client.get("/whoami", headers=session)).status_code == 401
        session = cookie_of(await login(client, "li.wei", PASSWORD))
        assert (await client.get("/whoami", headers=session)).json()["role"] == "engineer"
        off = await client.patch("/users/li.wei", json={"disabled": True}, headers=key["admin"])
        assert off.status_code == 200 and off.json()["disabled"]
        assert (await client.get("/whoami", headers=session)).status_code == 401
        assert (await login(client, "li.wei", PASSWORD)).status_code == 401
        missing = await client.patch("/users/nobody", json={"name": "x"}, headers=key["admin"])
        assert missing.status_code == 404


def test_streetsense_users_adds_and_disables_people_without_passwords_on_the_command_line(
    tmp_path: Path,
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    loaded = write_config(small_city(tmp_path))
    config = str(loaded.path)
    monkeypatch.setenv("STREETSENSE_PASSWORD", PASSWORD)
    assert cli(["users", "add", "chen", "--role", "engineer", "--name", "陈工", "-c", config]) == 0
    assert cli(["users", "add", "chen", "--role", "engineer", "-c", config]) == 1
    assert "already exists" in capsys.readouterr().err
    monkeypatch.setenv("STREETSENSE_PASSWORD", "weak")
    assert cli(["users", "passwd", "chen", "-c", config]) == 1
    assert "at least 10 characters" in capsys.readouterr().err
    assert logs_in(loaded, "chen")
    assert cli(["users", "disable", "chen", "-c", config]) == 0
    assert not logs_in(loaded, "chen")
    capsys.readouterr()
    assert cli(["users", "list", "-c", config]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.split()[:3] == ["chen", "engineer", "disabled"] and "陈工" in line


async def test_a_session_asked_for_while_it_ends_is_not_remembered_past_its_end() -> None:
    # A call that asked the database just before a session ended gets the old answer for
    # itself, but the answer is not kept: the next call asks again and is refused.
    remembered: Remembered[str, str] = Remembered()
    asked = asyncio.Event()
    go_on = asyncio.Event()
    answers = iter(["session of li.wei", None])

    async def ask() -> str | None:
        asked.set()
        await go_on.wait()
        return next(answers)

    in_flight = asyncio.create_task(remembered.get("token", ask, "a session"))
    await asked.wait()
    remembered.forget_where(lambda session: session == "session of li.wei")
    go_on.set()
    assert await in_flight == "session of li.wei"
    assert await remembered.get("token", ask, "a session") is None
