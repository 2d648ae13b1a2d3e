"""What the image store tests share: the coordinator's settings for stand-in stores on loopback
addresses (127.0.0.x, one port for all, as the coordinator expects), and their hosts."""

from __future__ import annotations

from cryptography.fernet import Fernet
from pydantic import SecretStr

from agentkit.tls import TlsSettings
from coordinator.domain import credentials
from coordinator.domain.hosts import Host
from coordinator.settings import CoordinatorSettings

KEY, OTHER_KEY = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def settings(port: int, secret_key: str | None = KEY) -> CoordinatorSettings:
    return CoordinatorSettings(admin_token="a" * 16, imagestore_port=port, secret_key=secret_key,
                               tls=TlsSettings(plain_http=True))  # the stand-ins speak plain HTTP


def store_host(n: int, key: str = KEY) -> Host:
    """The image store host at 127.0.0.<n>, its token sealed with `key`."""
    return Host(uuid=f"u{n}", name=f"store{n}", address=f"127.0.0.{n}", kind="imagestore", token_sha256="",
                created=0.0, agent_secret=credentials.encrypt(SecretStr(key), "t" * 24))
