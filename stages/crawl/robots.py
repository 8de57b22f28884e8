"""robots.txt per RFC 9309, parsed with protego (longest match, `*` and `$` wildcards; Python 3.11's
urllib.robotparser uses first-match and no wildcards, so `Disallow: /` + `Allow: /public` would block /public).

Status rules from the RFC: 2xx = parse it; 4xx (404 included) = no restrictions; 5xx or unreachable = the whole
site is disallowed. The rules text is cached in the crawl's `.partial/robots/` so a resumed or later round
does not refetch it.

A page's own rules (`page_directives`): `noindex` / `nofollow` / `none` from <meta name="robots"> and the
X-Robots-Tag header, where a value may be scoped to one crawler (`otherbot: noindex` does not apply to us).
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


# X-Robots-Tag values may start with a user agent ("googlebot: noindex"); these directives contain a colon
# themselves and are not one.
_COLON_DIRECTIVES = {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}


def agent_token(user_agent: str) -> str:
    """The product token robots rules name a crawler by: `zhgpt-crawler` in `zhgpt-crawler/0.1 (+https://...)`."""
    return user_agent.split("/", 1)[0].split()[0].lower() if user_agent.strip() else ""


def page_directives(values: list[str], agent: str) -> set[str]:
    """`noindex` / `nofollow` from X-Robots-Tag header values or <meta name="robots"> contents, as they apply to the
    crawler named `agent` (a value scoped to another user agent is ignored; `none` means both)."""
    out: set[str] = set()
    for value in values:
        head, sep, rest = value.partition(":")
        if sep and head.strip().lower() not in _COLON_DIRECTIVES and "," not in head:
            if head.strip().lower() != agent:
                continue
            value = rest
        for d in (t.strip().lower() for t in value.split(",")):
            if d == "none":
                out |= {"noindex", "nofollow"}
            elif d in ("noindex", "nofollow"):
                out.add(d)
    return out
