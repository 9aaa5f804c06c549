"""The runtime services' settings style (docs/architecture.md, "Runtime settings").

Every service's settings are a pydantic-settings model whose fields name their environment
variable as `validation_alias` (or, with an `env_prefix`, take PREFIX + the field's name).
`from_env` reads them from a mapping, so settings can be built without touching `os.environ`
(tests; handlers never read it); built in code, a model takes only the values given.

Secrets never arrive as plain variables: a field marked `SecretFile` is read from the file its
`*_FILE` variable names (non-empty lines, stripped; the first one, or all of them for a
rotation's old and new value), and is a `SecretStr` so that `repr`, `str` and logs show stars.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and what to do."""

    def __init__(self, message: str, variables: tuple[str, ...]) -> None:
        super().__init__(message)
        self.variables = variables


@dataclass(frozen=True)
class SecretFile:
    """Field marker: the field's variable names a file holding the value (a Docker secret)."""

    # All non-empty lines (a tuple), not just the first: during a rotation the file holds the
    # new value and the old one.
    all_lines: bool = False


def split_commas(value: object) -> object:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


# A comma-separated variable (ORBIS_ALLOWED_ORIGINS="a, b"); built in code, any sequence.
CommaSeparated = Annotated[tuple[str, ...], BeforeValidator(split_commas)]


def reveal(secret: SecretStr | None) -> str | None:
    """The value of an optional secret, for the one call that needs it (a client's password)."""
    return secret.get_secret_value() if secret is not None else None


class RuntimeSettings(BaseSettings):
    # Built in code, fields go by name; from the environment, by variable (the alias).
    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    # Shared by every service of an install.
    log_level: str = Field("info", validation_alias="ORBIS_LOG_LEVEL")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only from_env reads an environment, and only the mapping it is given.
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """The settings from environment variables; SettingsError names what is wrong."""
        try:
            return cls(**_environment_values(cls, env, cls.model_config.get("env_prefix", "")))
        except ValidationError as exc:
            # One line, about the first variable in the fields' order; all of them are named.
            problems = [_describe(cls, error) for error in exc.errors()]
            raise SettingsError(
                problems[0][1], tuple(variable for variable, _ in problems)
            ) from None


def _variable_of(name: str, field: FieldInfo, prefix: str) -> str | None:
    """The environment variable a field is read from; None: set in code only (tuning knobs)."""
    if isinstance(field.validation_alias, str):
        return field.validation_alias
    return (prefix + name).upper() if prefix else None


def _secret_file(field: FieldInfo) -> SecretFile | None:
    return next((item for item in field.metadata if isinstance(item, SecretFile)), None)


def _environment_values(
    model: type[BaseModel], env: Mapping[str, str], prefix: str
) -> dict[str, Any]:
    """Each field's value from `env` (an empty variable is unset), keyed by its alias or name."""
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            # A group of settings (the API's rate limits): its fields name their own variables.
            nested = _environment_values(field.annotation, env, prefix)
            if nested:
                values[name] = nested
            continue
        variable = _variable_of(name, field, prefix)
        raw = env.get(variable, "").strip() if variable else ""
        if not variable or not raw:
            continue
        marker = _secret_file(field)
        # Keyed as validation takes it: by the alias, or by name when the prefix made the name.
        key = variable if isinstance(field.validation_alias, str) else name
        if marker is None:
            values[key] = raw
            continue
        lines = _secret_lines(variable, Path(raw), required=field.is_required())
        if lines:
            values[key] = tuple(lines) if marker.all_lines else lines[0]
    return values


def _secret_lines(variable: str, path: Path, *, required: bool) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(
            f"{variable}: cannot read {path} ({exc.strerror})", (variable,)
        ) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if required and not lines:
        raise SettingsError(f"{variable}: {path} is empty", (variable,))
    return lines


def _describe(model: type[RuntimeSettings], error: Any) -> tuple[str, str]:
    """(variable, one line about it) for one of pydantic's errors."""
    names = [part for part in error["loc"] if isinstance(part, str)]
    if not names:
        # A check of the whole model (several variables, or one converted): its own words.
        return model.__name__, " ".join(str(error["ctx"]["error"]).split())
    name, field = _field_named(model, names)
    variable = (
        names[-1]
        if field is None
        else _variable_of(name, field, model.model_config.get("env_prefix", "")) or name
    )
    is_file = field is not None and _secret_file(field) is not None
    value = error.get("input")
    kind = error["type"]
    if kind == "missing":
        what_to_do = (
            "point it at the secret file" if is_file else "set it in the service's environment"
        )
        return variable, f"{variable} is not set; {what_to_do}"
    if kind in ("int_parsing", "int_from_float"):
        return variable, f"{variable}={value!r} is not a whole number"
    if kind == "bool_parsing":
        return variable, f"{variable}={value!r} is not a boolean; use true or false"
    if kind == "greater_than_equal":
        return variable, f"{variable}={value} is below the minimum {error['ctx']['ge']}"
    reason = str(error["ctx"]["error"]) if kind == "value_error" else str(error["msg"])
    reason = " ".join(reason.split())  # one line, whatever a library's message holds
    # Secrets and fields kept out of repr() stay out of the message too.
    shown = "(hidden)" if field is None or is_file or not field.repr else repr(value)
    return variable, f"{variable}={shown}: {reason}"


def _field_named(model: type[BaseModel], loc: list[str]) -> tuple[str, FieldInfo | None]:
    """The field an error's location points at (by field name or variable), and its name."""
    fields = model.model_fields
    for part in loc:
        name, field = next(
            (
                (name, info)
                for name, info in fields.items()
                if part in (name, info.validation_alias)
            ),
            (part, None),
        )
        if (
            field is not None
            and isinstance(field.annotation, type)
            and issubclass(field.annotation, BaseModel)
        ):
            fields = field.annotation.model_fields
            continue
        return name, field
    return loc[-1], None
