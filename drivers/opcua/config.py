"""Typed options of the OPC UA driver; unknown keys are errors.

Parsing is pure: it checks the shape of NodeIds and browse paths but never
talks to a server. Whether a node exists is only known once connected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from drivers.base import (
    ConfigError,
    ConfigProblem,
    Duration,
    Endpoint,
    StrictModel,
    TagBase,
    problems_from_validation_error,
)

KIND = "opcua"

# ns=<index>; or nsu=<uri>; then exactly one identifier i= / s= / g= / b=.
_NODE_ID = re.compile(r"^(?:(?:ns=\d+|nsu=[^;]+);)?(?:i=\d+|s=.+|g=[0-9A-Fa-f-]{36}|b=.+)$")
# A browse path element: <namespace index>:<browse name>, e.g. 2:Line1.
_PATH_ELEMENT = re.compile(r"^\d+:[^/:]+$")
_TYPES = ("bool", "int", "float", "string")


def check_node_id(text: str) -> str:
    """Accept ``ns=2;s=Line1.Speed``, ``i=2258``, ``nsu=urn:x;s=Speed``...; raise otherwise."""
    if not _NODE_ID.match(text):
        raise ValueError(
            "expected a NodeId such as ns=2;s=Line1.Speed, i=2258 or nsu=urn:vendor:line;s=Speed"
        )
    return text


def check_browse_path(text: str) -> str:
    """Accept ``0:Objects/2:Line1/2:Speed`` (from the Root folder); raise otherwise."""
    parts = text.strip("/").split("/")
    if not text.strip("/") or not all(_PATH_ELEMENT.match(p) for p in parts):
        raise ValueError(
            "expected a browse path from the Root folder such as 0:Objects/2:Line1/2:Speed"
        )
    return text.strip("/")


class OpcuaTag(TagBase):
    """One variable on the server, named by NodeId or by browse path (exactly one)."""

    node: str | None = Field(None, description="NodeId, e.g. ns=2;s=Line1.Speed.")
    browse_path: str | None = Field(
        None, description="Path from the Root folder, e.g. 0:Objects/2:Line1/2:Speed."
    )
    type: Literal["bool", "int", "float", "string"] | None = Field(
        None, description="Coerce the server's value to this type; default: keep its own."
    )
    scale: float = Field(1.0, description="value * scale + offset, for numeric values.")
    offset: float = Field(0.0, description="Added after scale.")
    sampling_interval: Duration | None = Field(
        None, description="Subscribe mode: how often the server samples this node."
    )

    @field_validator("node")
    @classmethod
    def _check_node(cls, value: str | None) -> str | None:
        return None if value is None else check_node_id(value)

    @field_validator("browse_path")
    @classmethod
    def _check_path(cls, value: str | None) -> str | None:
        return None if value is None else check_browse_path(value)

    @model_validator(mode="after")
    def _one_address(self) -> OpcuaTag:
        if (self.node is None) == (self.browse_path is None):
            raise ValueError("give exactly one of node or browse_path")
        if self.type in ("bool", "string") and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError(f"scale/offset apply to numbers, not to type {self.type}")
        return self

    @property
    def address(self) -> str:
        """The node or browse path as written in config, for messages."""
        return self.node or self.browse_path or ""


class OpcuaConnection(StrictModel):
    """Where the server is and how to log in."""

    endpoint: str = Field(description="Server URL, opc.tcp://host:4840/path.")
    security_policy: Literal["None", "Basic256Sha256"] | None = Field(
        None, description="Basic256Sha256 needs security_mode, certificate and private_key."
    )
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] | None = Field(
        None, description="Sign or SignAndEncrypt, with security_policy Basic256Sha256."
    )
    certificate: Path | None = Field(None, description="Client certificate (PEM or DER).")
    private_key: Path | None = Field(None, description="Client private key (PEM).")
    server_certificate: Path | None = Field(
        None, description="Pin the server certificate; default: take it from the endpoint list."
    )
    application_uri: str = Field(
        "urn:edge-agent:client",
        description="Our ApplicationUri; with security it must equal the URI in the certificate.",
    )
    username: str | None = Field(None, description="User name; anonymous when unset.")
    password: SecretStr | None = Field(
        None, repr=False, description="Password of username; prefer ${ENV}."
    )
    timeout: Duration = Field(5.0, gt=0, description="Every request and the connect itself.")
    session_timeout: Duration = Field(
        30.0, gt=0, description="How long the server keeps the session of a silent client."
    )
    mode: Literal["poll", "subscribe"] = Field(
        "poll", description="poll: read every interval; subscribe: the server sends changes."
    )
    publishing_interval: Duration = Field(1.0, gt=0, description="Subscribe mode only.")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not re.match(r"^opc\.tcp://[^/:\s]+(:\d{1,5})?(/\S*)?$", value):
            raise ValueError("expected opc.tcp://host:port/path")
        return value

    @model_validator(mode="after")
    def _security(self) -> OpcuaConnection:
        secure = self.security_policy not in (None, "None")
        if secure and self.security_mode in (None, "None"):
            raise ValueError(
                "security_policy Basic256Sha256 needs security_mode Sign or SignAndEncrypt"
            )
        if not secure and self.security_mode not in (None, "None"):
            raise ValueError("security_mode needs security_policy Basic256Sha256")
        if secure and (self.certificate is None or self.private_key is None):
            raise ValueError("security_policy Basic256Sha256 needs certificate and private_key")
        files = (self.certificate, self.private_key, self.server_certificate)
        if not secure and any(f is not None for f in files):
            # Files without a policy would connect unsecured without a word: refuse instead.
            raise ValueError(
                "certificate, private_key and server_certificate are used only with"
                " security_policy Basic256Sha256 and a security_mode"
            )
        if (self.password is not None) and not self.username:
            raise ValueError("password given without username")
        return self

    @property
    def secure(self) -> bool:
        """True when the channel is signed (and maybe encrypted)."""
        return self.security_policy == "Basic256Sha256"


class OpcuaConnectionSection(StrictModel):
    """``connection: {opcua: {...}}``."""

    opcua: OpcuaConnection = Field(description="The server.")


class OpcuaProtocol(StrictModel):
    """The profile's ``protocol:`` section; OPC UA has nothing to set there but its kind."""

    kind: Literal["opcua"] | None = Field(None, description="The protocol; only opcua here.")


class OpcuaOptions(StrictModel):
    """Everything one OPC UA device needs, validated."""

    connection: OpcuaConnectionSection
    protocol: OpcuaProtocol = Field(default_factory=OpcuaProtocol)
    tags: dict[str, OpcuaTag] = Field(default_factory=dict)

    @property
    def conn(self) -> OpcuaConnection:
        """Shortcut to ``connection.opcua``."""
        return self.connection.opcua

    def endpoint(self) -> Endpoint:
        """``opcua opc.tcp://HOST:PORT/PATH`` (with the security mode when secured)."""
        conn = self.conn
        url = urlsplit(conn.endpoint)
        tcp = (url.hostname, url.port or 4840) if url.hostname else None
        secured = f" {conn.security_policy} {conn.security_mode}" if conn.secure else ""
        return Endpoint("opcua", f"opcua {conn.endpoint}{secured}", tcp=tcp)

    def secret_files(self) -> dict[str, Path]:
        """The client private key, when one is configured (the certificate is public)."""
        key = self.conn.private_key
        return {} if key is None else {"the OPC UA client private key": key}

    def group(self, name: str) -> dict[str, OpcuaTag]:
        """The tags of poll group ``name``, in config order."""
        return {tag: t for tag, t in self.tags.items() if t.group == name}


def parse_options(options: Mapping[str, Any]) -> OpcuaOptions:
    """Validate driver options; raise :class:`ConfigError` listing every problem."""
    problems: list[ConfigProblem] = []
    if not isinstance(options, Mapping):
        raise ConfigError([ConfigProblem((), "expected a mapping")])
    connection = options.get("connection")
    if isinstance(connection, Mapping) and KIND not in connection:
        problems.append(ConfigProblem(("connection", KIND), "is required"))
    try:
        parsed = OpcuaOptions.model_validate(dict(options))
    except ValidationError as exc:
        for problem in _located(exc):
            if problem not in problems:
                problems.append(problem)
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return parsed


def _located(exc: ValidationError) -> list[ConfigProblem]:
    """Problems as ``drivers.base`` words them, minus what must not be echoed back.

    A check spanning several keys would show the whole section (password
    included) as the offending input, and a wrong password value would be
    shown as is: both messages keep only the explanation.
    """
    problems = problems_from_validation_error(exc)
    for i, err in enumerate(exc.errors(include_url=False)):
        spans_keys = err["type"] == "value_error" and isinstance(err.get("input"), Mapping)
        if spans_keys or problems[i].loc[-1:] == ("password",):
            message = err["msg"].removeprefix("Value error, ")
            problems[i] = ConfigProblem(problems[i].loc, message)
    return problems
