"""A bearer token or a Basic user: the header value, and nothing secret in a repr or log line."""

from __future__ import annotations

import base64

import pytest

from proxy.credentials.settings import BasicCredentialSettings, BearerCredentialSettings
from proxy.credentials.static import StaticCredential


async def test_a_bearer_token_goes_as_bearer() -> None:
    credential = StaticCredential(BearerCredentialSettings("abc.DEF-123_~+/="), upstream="vcf")
    assert await credential.authorization() == "Bearer abc.DEF-123_~+/="


async def test_a_basic_user_goes_as_rfc7617_utf8() -> None:
    credential = StaticCredential(BasicCredentialSettings("admin", "pä55 word:x"), upstream="hcp")
    assert await credential.authorization() == "Basic " + base64.b64encode("admin:pä55 word:x".encode()).decode()


@pytest.mark.parametrize(
    "settings",
    [BearerCredentialSettings("static-secret-token"), BasicCredentialSettings("admin", "static-secret-token")],
    ids=["bearer", "basic"],
)
async def test_a_refused_credential_is_logged_once_without_its_value(
    settings: BearerCredentialSettings | BasicCredentialSettings, caplog: pytest.LogCaptureFixture
) -> None:
    credential = StaticCredential(settings, upstream="vcf")
    value = await credential.authorization()
    for _ in range(3):
        credential.rejected(value)
    assert await credential.authorization() == value  # nothing to log in again with: the same value
    assert len(caplog.records) == 1 and "upstream vcf refused labgate's" in caplog.text
    everything = caplog.text + repr(credential) + repr(settings)
    assert "static-secret-token" not in everything and value.split()[1] not in everything


@pytest.mark.parametrize(
    "make",
    [
        lambda: BearerCredentialSettings("two words"),
        lambda: BearerCredentialSettings("line\r\nX-Injected: 1"),
        lambda: BasicCredentialSettings("a:b", "pw"),
        lambda: BasicCredentialSettings("admin", "pw\r\nX-Injected: 1"),
    ],
    ids=["bearer_space", "bearer_line_break", "basic_colon_user", "basic_line_break"],
)
def test_a_value_that_could_break_the_header_is_refused(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]
