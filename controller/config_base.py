"""Types every config section uses: ids and the names of secrets' environment variables."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=64)]
#: The name of an environment variable holding a secret (never the secret itself).
EnvName = Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")]
