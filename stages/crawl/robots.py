"""robots.txt per RFC 9309, parsed with protego (longest match, `*` and `$` wildcards; Python 3.11's
urllib.robotparser uses first-match and no wildcards, so `Disallow: /` + `Allow: /public` would block /public).

Status rules from the RFC: 2xx = parse it; 4xx (404 included) = no restrictions; 5xx or unreachable = the whole
site is disallowed. The rules text is cached in the crawl's `.partial/robots/` so a resumed or later round
does not refetch it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Robots:
    """One origin's rules. `kind` is "parsed", "allow_all" or "disallow_all" (with `reason`)."""

    kind: str
    text: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        self._parser = None
        if self.kind == "parsed":
            from protego import Protego

            self._parser = Protego.parse(self.text)

    @classmethod
    def from_response(cls, status: int | None, text: str, error: str = "") -> "Robots":
        if status is None:
            return cls("disallow_all", reason=f"robots.txt unreachable ({error})")
        if 200 <= status < 300:
            return cls("parsed", text)
        if 400 <= status < 500:
            return cls("allow_all", reason=f"robots.txt status {status}")
        return cls("disallow_all", reason=f"robots.txt status {status}")

    def allowed(self, url: str, user_agent: str) -> bool:
        if self.kind == "allow_all":
            return True
        if self.kind == "disallow_all":
            return False
        return self._parser.can_fetch(url, user_agent)

    def crawl_delay(self, user_agent: str) -> float | None:
        if self._parser is None:
            return None
        d = self._parser.crawl_delay(user_agent)
        return float(d) if d is not None else None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "text": self.text, "reason": self.reason}
