"""Who may deliver what: intake keys name the sources they may deliver (`churnops keys create --source`)."""

from __future__ import annotations

from collections.abc import Mapping

from churnops.contracts.source_contract import SourceContract
from churnops.ingestion.intake.errors import IntakeError
from churnops.storage.keys import KeyRing

API_KEY_HEADER = "X-API-Key"
_CHALLENGE = {"WWW-Authenticate": API_KEY_HEADER}


def authorize(
    *,
    source: str,
    key: str | None,
    contracts: Mapping[str, SourceContract],
    keys: KeyRing | None,
) -> SourceContract:
    """The contract of the source a request delivers, once the request may deliver it.

    Args:
        source: The source named in the path.
        key: The `X-API-Key` header, if any.
        contracts: The source contracts, by name.
        keys: The key ring; None when keys are not required.

    Returns:
        The source's contract.

    Raises:
        IntakeError: 401 without a valid key, 404 for a source without a contract, 403 when the
            key may not deliver this source (a prediction key, or another source's key).
    """
    grant = None
    if keys is not None:
        if not key:
            raise IntakeError(
                401,
                "unauthorized",
                f"the intake requires an API key in the {API_KEY_HEADER} header "
                "(`churnops keys create NAME --source SOURCE`)",
                headers=_CHALLENGE,
            )
        grant = keys.grant(key)
        if grant is None:
            raise IntakeError(
                401,
                "unauthorized",
                f"the {API_KEY_HEADER} header does not hold a valid API key",
                headers=_CHALLENGE,
            )
    contract = contracts.get(source)
    if contract is None:
        raise IntakeError(
            404, "unknown_source", f"no source contract named {source!r}; sources: {', '.join(contracts)}"
        )
    if grant is not None and source not in grant.sources:
        allowed = ", ".join(sorted(grant.sources)) or "none (it is a prediction key)"
        raise IntakeError(
            403,
            "forbidden",
            f"the key of {grant.consumer} may not deliver {source}; sources it may deliver: {allowed}",
        )
    return contract
