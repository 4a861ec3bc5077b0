"""The console's users: a TOML file of names, argon2 password hashes and roles.

The file (``sagaline ui --users FILE``; ``sagaline ui add-user`` writes it)::

    [console]
    secret_key = "..."            # optional: signs session cookies

    [users.grace]
    password_hash = "$argon2id$..."
    role = "approver"             # viewer | approver | operator | admin
    saga_types = ["refund"]       # approver only: the saga types they may approve ("*": all)

Roles: ``viewer`` reads; ``approver`` also approves or rejects the approvals
of its saga types; ``operator`` reads and uses the operator actions (cancel,
pause, resume, retry-step, skip-step); ``admin`` may do everything.
"""

from __future__ import annotations

import json
import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from sagaline.orchestrator.core.errors import ConfigError

__all__ = [
    "ROLES",
    "Role",
    "User",
    "UserStore",
    "add_user",
    "load_users",
    "session_secret",
]

Role = Literal["viewer", "approver", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "approver", "operator", "admin")

_HASHER = PasswordHasher()
#: a hash to verify against when the name is unknown, so both cases take as long
_DUMMY_HASH = _HASHER.hash("not a password of anyone")


@dataclass(frozen=True)
class User:
    """One console user (``password_hash`` never leaves this module's checks)."""

    name: str
    role: Role
    password_hash: str = field(repr=False)
    saga_types: tuple[str, ...] = ()

    def may_approve(self, saga_type: str) -> bool:
        """Whether this user may approve or reject an approval of ``saga_type``."""
        if self.role == "admin":
            return True
        return self.role == "approver" and ("*" in self.saga_types or saga_type in self.saga_types)

    @property
    def may_operate(self) -> bool:
        """Whether this user may cancel, pause, resume, retry or skip."""
        return self.role in ("operator", "admin")


@dataclass(frozen=True)
class UserStore:
    """The users of one file, and its optional session secret."""

    users: dict[str, User]
    secret_key: str | None = None

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs, else ``None`` (same cost either way)."""
        user = self.users.get(name)
        try:
            _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return None
        return user


def _user(name: str, raw: Any, path: Path) -> User:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [users.{name}] must be a table")
    role = raw.get("role", "viewer")
    if role not in ROLES:
        raise ConfigError(f"{path}: user {name!r} has role {role!r}; one of {', '.join(ROLES)}")
    pw = raw.get("password_hash")
    if not isinstance(pw, str) or not pw.startswith("$argon2"):
        raise ConfigError(
            f"{path}: user {name!r} has no argon2 password_hash; "
            "set one with `sagaline ui add-user`"
        )
    types = raw.get("saga_types", [])
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise ConfigError(f"{path}: user {name!r}: saga_types must be a list of names")
    return User(name, cast(Role, role), pw, tuple(types))


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no users file {path}: create it with `sagaline ui add-user`") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def load_users(path: Path) -> UserStore:
    """Read and check the users file (:class:`ConfigError` with one clear line)."""
    data = _read(path)
    raw_users = data.get("users", {})
    if not isinstance(raw_users, dict) or not raw_users:
        raise ConfigError(
            f"{path} has no [users.<name>] table: add one with `sagaline ui add-user`"
        )
    users = {name: _user(name, raw, path) for name, raw in raw_users.items()}
    console = data.get("console", {})
    secret = console.get("secret_key") if isinstance(console, dict) else None
    return UserStore(users, secret if isinstance(secret, str) and secret else None)


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _render(data: dict[str, Any]) -> str:
    lines = ["# sagaline ui users (written by `sagaline ui add-user`)", ""]
    console = data.get("console", {})
    if isinstance(console, dict) and console:
        lines.append("[console]")
        lines += [f"{k} = {_toml_string(str(v))}" for k, v in console.items()]
        lines.append("")
    for name, raw in data.get("users", {}).items():
        lines.append(f"[users.{_toml_string(name)}]")
        lines.append(f"password_hash = {_toml_string(raw['password_hash'])}")
        lines.append(f"role = {_toml_string(raw['role'])}")
        types = ", ".join(_toml_string(t) for t in raw.get("saga_types", []))
        lines.append(f"saga_types = [{types}]")
        lines.append("")
    return "\n".join(lines)


def add_user(path: Path, name: str, password: str, role: Role, saga_types: list[str]) -> bool:
    """Add or replace ``name`` in ``path`` (created 0600 when absent); True when it was new."""
    if not name or any(c.isspace() for c in name):
        raise ConfigError("a user name must be non-empty and contain no spaces")
    if len(password) < 8:
        raise ConfigError("a password must have at least 8 characters")
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    data = _read(path) if path.exists() else {}
    users = data.setdefault("users", {})
    new = name not in users
    users[name] = {
        "password_hash": _HASHER.hash(password),
        "role": role,
        "saga_types": saga_types if role == "approver" else [],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(_render(data))
    return new


def session_secret(store: UserStore, state_dir: Path) -> str:
    """The users file's ``secret_key``, else one generated once into ``state_dir`` (0600)."""
    if store.secret_key:
        return store.secret_key
    path = state_dir / "console-secret"
    if path.exists():
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return path.read_text(encoding="utf-8").strip()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(value + "\n")
    return value
