"""One rotation strategy per secret: the ordered, idempotent steps that replace it live.

Every strategy keeps old and new valid together while services roll, then withdraws the old
value and checks it is refused. Values are staged in `secrets/<name>.next` / `.prev` (see
`secretfiles`); the journal only ever holds their fingerprints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from enum import StrEnum
from pathlib import Path

from backups import crypto as backup_crypto
from backups import keys as backup_keys
from orbisctl.core import secretfiles
from orbisctl.core.config import ModelProvider
from orbisctl.core.errors import UserError
from orbisctl.core.secretfiles import generate_secret, read_gemini_key
from orbisctl.rotation.secretfiles import fingerprint
from orbisctl.rotation.steps import RotationContext, RotationFailed, Step, StepEnv, staged_value
from runtime.common.keyring import JwtKey, KeyRing, new_key


class SecretKind(StrEnum):
    # Names of secret kinds, not secrets.
    JWT = "jwt"
    INTERNAL_TOKEN = "internal_token"  # noqa: S105
    REDIS_PASSWORD = "redis_password"  # noqa: S105
    POSTGRES_PASSWORD = "postgres_password"  # noqa: S105
    GEMINI_API_KEY = "gemini_api_key"
    BACKUP_KEY = "backup_key"
    # Not a rotation of its own: dropping verify-only JWT keys whose tokens have all expired.
    JWT_RETIRE = "jwt_retire"


# The order `--all` rotates in: host-only and cheap first, the data stores, then the model key.
ROTATION_ORDER = (
    SecretKind.BACKUP_KEY,
    SecretKind.JWT,
    SecretKind.INTERNAL_TOKEN,
    SecretKind.REDIS_PASSWORD,
    SecretKind.POSTGRES_PASSWORD,
    SecretKind.GEMINI_API_KEY,
)

# Files under secrets/ that each kind replaces (docs/architecture.md, "Install directory").
SECRET_FILES: dict[SecretKind, str] = {
    SecretKind.JWT: secretfiles.JWT_KEYS,
    SecretKind.INTERNAL_TOKEN: secretfiles.INTERNAL_TOKEN,
    SecretKind.REDIS_PASSWORD: secretfiles.REDIS_PASSWORD,
    SecretKind.POSTGRES_PASSWORD: secretfiles.POSTGRES_PASSWORD,
    SecretKind.GEMINI_API_KEY: secretfiles.GEMINI_API_KEY,
    SecretKind.BACKUP_KEY: secretfiles.BACKUP_KEY,
}

# The login role name the services use; absent means the owner role itself (first install).
POSTGRES_USER_FILE = secretfiles.POSTGRES_USER
POSTGRES_OWNER = secretfiles.POSTGRES_OWNER_ROLE
POSTGRES_LOGIN_ROLES = ("orbis_a", "orbis_b")
REDIS_USER = "orbis"

API = "api"
# The API with referrals on (an optional profile): the same database and Redis logins.
REFERRALS = "referrals"
GATEWAY = "gateway"
EMULATOR = "emulator"
# Services that verify access tokens with the JWT key ring.
JWT_VERIFIERS = (API, REFERRALS)


def _roll(service: str, *, name: str | None = None) -> Step:
    def apply(env: StepEnv) -> None:
        env.ctx.need_roller().roll(service)

    return Step(name or f"roll_{service}", f"restart {service}, one replica at a time", apply)


def _roll_all(env: StepEnv, services: tuple[str, ...]) -> None:
    for service in services:
        env.ctx.need_roller().roll(service)


def _roll_jwt_verifiers(name: str) -> Step:
    def apply(env: StepEnv) -> None:
        _roll_all(env, JWT_VERIFIERS)

    return Step(name, "restart api (and referrals), one replica at a time", apply)


def _stage(secret: str, make_value: Callable[[StepEnv], str], summary: str) -> Step:
    """Keep the current value as `.prev` and the new one as `.next`; record fingerprints."""

    def apply(env: StepEnv) -> None:
        staged = env.secrets.staged_next(secret)
        if (
            staged is not None
            and env.facts.get("new") == fingerprint(staged)
            and env.secrets.staged_prev(secret) is not None
        ):
            return
        current = env.secrets.read(secret)
        value = make_value(env)
        env.secrets.stage_prev(secret, current)
        env.secrets.stage_next(secret, value)
        env.facts.update(old=fingerprint(current), new=fingerprint(value))

    def undo(env: StepEnv) -> None:
        env.secrets.clear_staged(secret)

    return Step("stage", summary, apply, undo)


def _finish(secret: str) -> Step:
    def apply(env: StepEnv) -> None:
        env.secrets.clear_staged(secret)

    return Step("finish", "forget the old value (no --abort after this)", apply, reversible=False)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _new(env: StepEnv, secret: str) -> str:
    return _first_line(staged_value(env, secret, which="new"))


def _old(env: StepEnv, secret: str) -> str:
    return _first_line(staged_value(env, secret, which="old"))


def _write_lines(secret: str, *order: str) -> Callable[[StepEnv], None]:
    """A step action writing the live file as lines of the staged values, in `order`."""

    def write(env: StepEnv) -> None:
        values = {"new": _new(env, secret), "old": _old(env, secret)}
        env.secrets.write_lines(secret, *(values[which] for which in order))

    return write


def _then_roll(action: Callable[[StepEnv], None], *services: str) -> Callable[[StepEnv], None]:
    def run(env: StepEnv) -> None:
        action(env)
        _roll_all(env, services)

    return run


def _then_reload(action: Callable[[StepEnv], None], service: str) -> Callable[[StepEnv], None]:
    def run(env: StepEnv) -> None:
        action(env)
        env.ctx.need_roller().reload(service)

    return run


def _generated(kind: SecretKind) -> Callable[[StepEnv], str]:
    """A fresh value in the format `orbisctl init` generates for this secret."""

    def make(env: StepEnv) -> str:
        return generate_secret(SECRET_FILES[kind]).strip()

    return make


# --- Redis: two passwords on the ACL user at once --------------------------------------------


def redis_steps(ctx: RotationContext) -> list[Step]:
    secret = SECRET_FILES[SecretKind.REDIS_PASSWORD]
    consumers = (API, REFERRALS, GATEWAY)

    def add_new(env: StepEnv) -> None:
        env.ctx.need_redis().add_password(REDIS_USER, _new(env, secret), auth=_old(env, secret))

    def remove_new(env: StepEnv) -> None:
        env.ctx.need_redis().remove_password(REDIS_USER, _new(env, secret), auth=_old(env, secret))

    def check_new(env: StepEnv) -> None:
        if not env.ctx.need_redis().can_auth(REDIS_USER, _new(env, secret)):
            raise RotationFailed("Redis refuses the new password right after it was added")

    def remove_old(env: StepEnv) -> None:
        env.ctx.need_redis().remove_password(REDIS_USER, _old(env, secret), auth=_new(env, secret))

    def add_old(env: StepEnv) -> None:
        env.ctx.need_redis().add_password(REDIS_USER, _old(env, secret), auth=_new(env, secret))

    def check_old_refused(env: StepEnv) -> None:
        if env.ctx.need_redis().can_auth(REDIS_USER, _old(env, secret)):
            raise RotationFailed("Redis still accepts the old password after it was removed")

    return [
        _stage(secret, _generated(SecretKind.REDIS_PASSWORD), "generate the new Redis password"),
        Step("add_new", f"ACL user {REDIS_USER}: add the new password", add_new, remove_new),
        Step("verify_new", "check the new password authenticates", check_new),
        Step(
            "switch",
            "write secrets/redis_password",
            _write_lines(secret, "new"),
            _then_roll(_write_lines(secret, "old"), *consumers),
        ),
        *(_roll(service) for service in consumers),
        Step("remove_old", f"ACL user {REDIS_USER}: remove the old password", remove_old, add_old),
        Step("verify_old_refused", "check the old password is refused", check_old_refused),
        _finish(secret),
    ]


# --- PostgreSQL: alternating login roles -----------------------------------------------------


def _current_login_role(env: StepEnv) -> str:
    if not env.secrets.exists(POSTGRES_USER_FILE):
        return POSTGRES_OWNER
    return env.secrets.read_first_line(POSTGRES_USER_FILE)


def postgres_steps(ctx: RotationContext) -> list[Step]:
    secret = SECRET_FILES[SecretKind.POSTGRES_PASSWORD]
    # `migrate` is one-shot: it reads the new login when it next runs.
    consumers = (API, REFERRALS)

    def make_password(env: StepEnv) -> str:
        old_role = _current_login_role(env)
        env.facts["old_role"] = old_role
        env.facts["new_role"] = (
            POSTGRES_LOGIN_ROLES[1]
            if old_role == POSTGRES_LOGIN_ROLES[0]
            else POSTGRES_LOGIN_ROLES[0]
        )
        return _generated(SecretKind.POSTGRES_PASSWORD)(env)

    def enable_new(env: StepEnv) -> None:
        env.ctx.need_postgres().enable_login(
            env.facts["new_role"], _new(env, secret), owner=POSTGRES_OWNER
        )

    def disable_new(env: StepEnv) -> None:
        if "new_role" in env.facts:
            env.ctx.need_postgres().disable_login(env.facts["new_role"], owner=POSTGRES_OWNER)

    def check_new(env: StepEnv) -> None:
        if not env.ctx.need_postgres().can_login(env.facts["new_role"], _new(env, secret)):
            raise RotationFailed(f"PostgreSQL refuses the new login role {env.facts['new_role']}")

    def write_login(which: str) -> Callable[[StepEnv], None]:
        def write(env: StepEnv) -> None:
            role = env.facts[f"{which}_role"]
            password = _new(env, secret) if which == "new" else _old(env, secret)
            # The user first: a replica restarting in between reads the old password with the
            # new role, which fails loudly and is retried by the roll, never a silent mismatch
            # that outlives the rotation.
            env.secrets.write_lines(POSTGRES_USER_FILE, role, owner_like=secret)
            env.secrets.write_lines(secret, password)

        return write

    def disable_old(env: StepEnv) -> None:
        env.ctx.need_postgres().disable_login(env.facts["old_role"], owner=POSTGRES_OWNER)

    def enable_old(env: StepEnv) -> None:
        env.ctx.need_postgres().enable_login(
            env.facts["old_role"], _old(env, secret), owner=POSTGRES_OWNER
        )

    def check_old_refused(env: StepEnv) -> None:
        if env.ctx.need_postgres().can_login(env.facts["old_role"], _old(env, secret)):
            raise RotationFailed(f"PostgreSQL still accepts the old login {env.facts['old_role']}")

    return [
        _stage(secret, make_password, "generate the new password; pick the standby login role"),
        Step("enable_new", "standby login role: set the new password", enable_new, disable_new),
        Step("verify_new", "check the standby role logs in", check_new),
        Step(
            "switch",
            "write secrets/postgres_user and secrets/postgres_password",
            write_login("new"),
            _then_roll(write_login("old"), *consumers),
        ),
        *(_roll(service) for service in consumers),
        Step(
            "disable_old", "previous login role: no more password logins", disable_old, enable_old
        ),
        Step("verify_old_refused", "check the old login is refused", check_old_refused),
        _finish(secret),
    ]


# --- internal service token: a two-line file, all lines accepted, the first one used ---------


def internal_token_steps(ctx: RotationContext) -> list[Step]:
    secret = SECRET_FILES[SecretKind.INTERNAL_TOKEN]
    return [
        _stage(secret, _generated(SecretKind.INTERNAL_TOKEN), "generate the new internal token"),
        Step(
            "accept_both",
            "internal_token = old + new (api accepts both)",
            _write_lines(secret, "old", "new"),
            _then_roll(_write_lines(secret, "old"), API),
        ),
        _roll(API, name="roll_api_accept"),
        Step(
            "use_new",
            "internal_token = new + old (gateways send the new one)",
            _write_lines(secret, "new", "old"),
            _then_roll(_write_lines(secret, "old", "new"), GATEWAY),
        ),
        _roll(GATEWAY),
        Step(
            "drop_old",
            "internal_token = new only",
            _write_lines(secret, "new"),
            _then_roll(_write_lines(secret, "new", "old"), API),
        ),
        _roll(API, name="roll_api_drop"),
        _finish(secret),
    ]


# --- Gemini API key ---------------------------------------------------------------------------


def _read_new_gemini_key(path: Path | None, provider: ModelProvider) -> Callable[[StepEnv], str]:
    def make(env: StepEnv) -> str:
        if path is not None:
            return read_gemini_key(path).strip()
        if provider is ModelProvider.GEMINI:  # core.choose_kinds refuses this up front
            raise UserError("rotating the Gemini key needs --gemini-key-file FILE")
        # The emulator accepts whatever key the install generates for it.
        return _generated(SecretKind.GEMINI_API_KEY)(env)

    return make


def gemini_steps(ctx: RotationContext, *, new_key_file: Path | None) -> list[Step]:
    secret = SECRET_FILES[SecretKind.GEMINI_API_KEY]
    provider = ctx.config.model.provider

    def validate(env: StepEnv) -> None:
        reason = env.ctx.need_gemini().check(_new(env, secret))
        if reason is not None:
            raise RotationFailed(
                f"the new Gemini key was refused: {reason}",
                hint="check the key, then --resume; or --abort to keep the current key",
            )

    def check_old_refused(env: StepEnv) -> None:
        if env.ctx.need_gemini().check(_old(env, secret)) is None:
            raise RotationFailed("the model endpoint still accepts the old Gemini key")

    stage = _stage(secret, _read_new_gemini_key(new_key_file, provider), "stage the new Gemini key")
    validate_step = Step("validate", "open a Live session with the new key", validate)
    if provider is ModelProvider.GEMINI:
        # Google accepts both keys until the operator deletes the old one in AI Studio.
        return [
            stage,
            validate_step,
            Step(
                "use_new",
                "gemini_api_key = new",
                _write_lines(secret, "new"),
                _then_roll(_write_lines(secret, "old"), GATEWAY),
            ),
            _roll(GATEWAY),
            _finish(secret),
        ]
    # The emulator reads its accepted keys from the same file (every line); the gateway uses
    # the first line.
    return [
        stage,
        Step(
            "accept_both",
            "gemini_api_key = old + new (the emulator accepts both)",
            _then_reload(_write_lines(secret, "old", "new"), EMULATOR),
            _then_reload(_write_lines(secret, "old"), EMULATOR),
        ),
        validate_step,
        Step(
            "use_new",
            "gemini_api_key = new + old (gateways use the new key)",
            _write_lines(secret, "new", "old"),
            _then_roll(_write_lines(secret, "old", "new"), GATEWAY),
        ),
        _roll(GATEWAY),
        Step(
            "drop_old",
            "gemini_api_key = new only (the emulator refuses the old key)",
            _then_reload(_write_lines(secret, "new"), EMULATOR),
            _then_reload(_write_lines(secret, "new", "old"), EMULATOR),
        ),
        Step("verify_old_refused", "check the old key is refused", check_old_refused),
        _finish(secret),
    ]


# --- JWT signing keys -------------------------------------------------------------------------


def _load_ring(env: StepEnv) -> KeyRing:
    return KeyRing.loads(env.secrets.read(SECRET_FILES[SecretKind.JWT]))


def _save_ring(env: StepEnv, ring: KeyRing) -> None:
    env.secrets.write(SECRET_FILES[SecretKind.JWT], ring.dumps())


def _with_signer(ring: KeyRing, signer_kid: str, *, now_retired: bool, env: StepEnv) -> KeyRing:
    """The same keys with `signer_kid` signing and the previous signer verify-only."""
    now = env.ctx.now()
    keys: list[JwtKey] = []
    for key in ring.keys:
        if key.kid == signer_kid:
            keys.append(replace(key, use="sign", retired_at=None))
        elif key.use == "sign":
            keys.append(replace(key, use="verify", retired_at=now if now_retired else None))
        else:
            keys.append(key)
    return KeyRing.of(keys)


def jwt_steps(ctx: RotationContext) -> list[Step]:
    def publish(env: StepEnv) -> None:
        ring = _load_ring(env)
        if "new_kid" not in env.facts:
            env.facts["old_kid"] = ring.signing_key.kid
            env.facts["new_kid"] = new_key(now=env.ctx.now()).kid
            # Saved before the ring changes, so a resumed run adds this kid, not a second key.
            env.checkpoint()
        if ring.verification_key(env.facts["new_kid"]) is None:
            fresh = replace(new_key(now=env.ctx.now(), use="verify"), kid=env.facts["new_kid"])
            _save_ring(env, KeyRing.of((*ring.keys, fresh)))

    def unpublish(env: StepEnv) -> None:
        ring = _load_ring(env)
        key = ring.verification_key(env.facts.get("new_kid", ""))
        # A key that has signed tokens stays (verify-only) so those tokens keep working.
        if key is not None and key.use == "verify" and key.retired_at is None:
            _save_ring(env, KeyRing.of(item for item in ring.keys if item.kid != key.kid))
            _roll_all(env, JWT_VERIFIERS)

    def promote(env: StepEnv) -> None:
        ring = _load_ring(env)
        if ring.signing_key.kid != env.facts["new_kid"]:
            _save_ring(env, _with_signer(ring, env.facts["new_kid"], now_retired=True, env=env))

    def demote(env: StepEnv) -> None:
        ring = _load_ring(env)
        if ring.signing_key.kid == env.facts["new_kid"]:
            restored = _with_signer(ring, env.facts["old_kid"], now_retired=True, env=env)
            _save_ring(env, restored)
            _roll_all(env, JWT_VERIFIERS)

    return [
        Step("publish", "add a new verify-only key to the JWT key ring", publish, unpublish),
        _roll_jwt_verifiers("roll_api_publish"),
        Step("promote", "the new key signs; the old one becomes verify-only", promote, demote),
        _roll_jwt_verifiers("roll_api_promote"),
    ]


def jwt_retire_steps(ctx: RotationContext) -> list[Step]:
    def prune(env: StepEnv) -> None:
        ring = _load_ring(env)
        kept = ring.without_retired(
            max_token_lifetime=env.ctx.jwt_max_token_lifetime, now=env.ctx.now()
        )
        dropped = sorted(set(ring.kids) - set(kept.kids))
        if dropped:
            env.facts["dropped_kids"] = ",".join(dropped)
            _save_ring(env, kept)

    return [
        Step(
            "drop_expired",
            "drop verify-only JWT keys whose tokens have all expired",
            prune,
            reversible=False,
        ),
        _roll_jwt_verifiers("roll_api"),
    ]


def jwt_keys_due(ctx: RotationContext) -> list[str]:
    """Kids of verify-only keys whose grace period is over (what `jwt_retire` would drop)."""
    path = ctx.secrets.path(SECRET_FILES[SecretKind.JWT])
    if not path.is_file():
        return []
    ring = KeyRing.load(path)
    kept = ring.without_retired(max_token_lifetime=ctx.jwt_max_token_lifetime, now=ctx.now())
    return sorted(set(ring.kids) - set(kept.kids))


# --- backup key ---------------------------------------------------------------------------------


def backup_key_steps(ctx: RotationContext) -> list[Step]:
    secret = SECRET_FILES[SecretKind.BACKUP_KEY]

    def key_bytes(text: str) -> bytes:
        return backup_crypto.b64d(text)

    def keep_old(env: StepEnv) -> None:
        backup_keys.add_to_ring(env.secrets.directory, key_bytes(_old(env, secret)))

    def switch_undo(env: StepEnv) -> None:
        # Backups taken with the new key before the abort must stay restorable.
        backup_keys.add_to_ring(env.secrets.directory, key_bytes(_new(env, secret)))
        env.secrets.write_lines(secret, _old(env, secret))

    def check(env: StepEnv) -> None:
        ring = backup_keys.load_key_ring(env.secrets.directory)
        new_kid = backup_crypto.key_id(key_bytes(_new(env, secret)))
        old_kid = backup_crypto.key_id(key_bytes(_old(env, secret)))
        if ring.current_kid != new_kid or ring.find(old_kid) is None:
            raise RotationFailed("the backup key ring does not hold both the new and old keys")
        env.facts.update(new_kid=new_kid, old_kid=old_kid)

    return [
        _stage(secret, _generated(SecretKind.BACKUP_KEY), "generate the new backup key"),
        Step("keep_old", "keep the current key in secrets/backup_keys.json", keep_old),
        Step("switch", "new backups use the new key", _write_lines(secret, "new"), switch_undo),
        Step("verify", "check the ring opens old and new backups", check),
        _finish(secret),
    ]


def steps_for(
    kind: SecretKind, ctx: RotationContext, *, gemini_key_file: Path | None = None
) -> list[Step]:
    if kind is SecretKind.GEMINI_API_KEY:
        return gemini_steps(ctx, new_key_file=gemini_key_file)
    builders: dict[SecretKind, Callable[[RotationContext], list[Step]]] = {
        SecretKind.JWT: jwt_steps,
        SecretKind.JWT_RETIRE: jwt_retire_steps,
        SecretKind.INTERNAL_TOKEN: internal_token_steps,
        SecretKind.REDIS_PASSWORD: redis_steps,
        SecretKind.POSTGRES_PASSWORD: postgres_steps,
        SecretKind.BACKUP_KEY: backup_key_steps,
    }
    return builders[kind](ctx)
