"""Config: YAML -> pydantic models. Precedence (lowest first): model defaults, the YAML file, `-o key=value` overrides.

Root keys: `pipeline` (name; one MLflow experiment per name), `work_dir`, `plugins` (modules that register extra
stages), `ray` and `tracking_uri` (execution settings, never part of a cache key), and one section per stage; the
stages that run are the ones whose section is present. Relative paths are resolved against the current directory.
`work_dir` may be an fsspec URL (s3://bucket/prefix): the store of record, with `scratch_dir` as the local mirror
stages work in and `storage_options` for the filesystem (see pipelines/storage.py).
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Optional, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from pipelines.stage import input_stages, load_plugins, ordered, registry
from pipelines.storage import default_scratch, is_url


class ConfigError(ValueError):
    """A config problem, reported as one line (exit code 2)."""


class RayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: Optional[str] = Field(None, description="join an existing cluster (ray://… or host:port); "
                                   "None = local Ray")
    num_cpus: Optional[int] = Field(None, ge=1, description="CPUs for a local Ray; None = all")
    workers: Optional[int] = Field(None, ge=1, description="max concurrent tasks per data stage; None = num_cpus")


class RootBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pipeline: str = Field("zhgpt", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    work_dir: Union[Path, str] = Field(Path("work"), description="a local path, or an fsspec URL (s3://bucket/prefix)")
    scratch_dir: Optional[Path] = Field(None, description="with a URL work_dir: the local mirror stages work in "
                                        "(on a cluster, a path every node mounts); None = under the temp dir")
    storage_options: dict[str, Any] = Field({}, description="fsspec options for a URL work_dir (endpoint_url, key…)")
    plugins: list[str] = []
    ray: RayConfig = RayConfig()
    tracking_uri: Optional[str] = None

    @property
    def local_dir(self) -> Path:
        """Where stages read and write files: the work_dir itself, or the scratch mirror of a URL work_dir."""
        if not is_url(self.work_dir):
            return Path(self.work_dir)
        return self.scratch_dir or default_scratch(str(self.work_dir))

    def stage_names(self) -> list[str]:
        return [n for n in registry() if getattr(self, n, None) is not None]

    def stage_cfg(self, name: str) -> Any:
        return getattr(self, name)


def root_model() -> type[RootBase]:
    fields = {name: (Optional[spec.config_model], None) for name, spec in registry().items()}
    return create_model("RootConfig", __base__=RootBase, **fields)


def _fmt_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field's type may hold (through Optional, list, dict, Union, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys a config section at `loc` (a pydantic error location, the unknown key last) accepts."""
    models = [model]
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        inner = [m for c in models if part in c.model_fields for m in _models_in(c.model_fields[part].annotation)]
        models = inner or models  # a union's tag (e.g. sources.0.seeds) names no field: stay on the members
    return sorted({k for m in models for k in m.model_fields})


def format_validation(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    e = exc.errors()[0]
    key = _fmt_loc(e["loc"])
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):  # the latter: a key a section lacks
        known = known_keys(model, e["loc"]) if model is not None else []
        near = difflib.get_close_matches(str(e["loc"][-1]), known, n=1, cutoff=0.6)
        hint = f" — did you mean {near[0]}?" if near else (f" (known: {', '.join(known)})" if known else "")
        return f"config error: {key}: unknown key{hint}{more}"
    return f"config error: {key}: {e['msg']} (got {e.get('input')!r}){more}"


def _list_item(node: list, part: str, key: str) -> Any:
    """`sources.debian-zh` (an item's `name`) or `sources.0` (its index) in an override's key."""
    names = [x.get("name") for x in node if isinstance(x, dict)]
    if part in names:
        return node[names.index(part)]
    if part.isdigit() and int(part) < len(node):
        return node[int(part)]
    raise ConfigError(f"config error: override {key}: no item {part!r} (items: {', '.join(map(str, names))})")


def apply_override(data: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"config error: override {item!r} is not KEY=VALUE (e.g. -o train.max_steps=200)")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    node: Any = data
    for p in parts[:-1]:
        nxt = _list_item(node, p, key) if isinstance(node, list) else node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, (dict, list)):
            raise ConfigError(f"config error: override {key}: {p} is not a section")
        node = nxt
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config error: override {key}: value {raw!r} is not valid YAML") from exc
    if isinstance(node, list):
        node[node.index(_list_item(node, parts[-1], key))] = value
    elif value is None and len(parts) == 1 and key != "work_dir":
        node.pop(parts[0], None)  # -o quality=null: the section leaves the config (the key's default)
    else:
        node[parts[-1]] = value


def load_dict(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config error: {p}: no such config file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config error: {p}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config error: {p}: the top level must be a mapping of sections")
    return data


def validate(data: dict) -> RootBase:
    try:
        load_plugins(list(data.get("plugins") or []))
    except ImportError as exc:
        raise ConfigError(f"config error: plugins: cannot import {exc.name!r}") from exc
    if "work_dir" in data and not str(data["work_dir"] or "").strip():
        raise ConfigError("config error: work_dir: empty; give a directory (e.g. work_dir: work/quickstart) "
                          "or an s3:// URL")
    model = root_model()
    for name in registry():  # an empty section (`dedupe:`) means "this stage, with its defaults"
        if name in data and data[name] is None:
            data[name] = {}
    try:
        cfg = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, model)) from None
    if is_url(cfg.work_dir):
        scheme, _, rest = str(cfg.work_dir).partition("://")
        if not rest.strip("/"):
            raise ConfigError(f"config error: work_dir: {cfg.work_dir!r} names no bucket (write {scheme}://bucket/prefix)")
        cfg.work_dir = str(cfg.work_dir).rstrip("/")
    else:
        cfg.work_dir = Path(str(cfg.work_dir).removeprefix("file://")).expanduser().resolve()
    if cfg.scratch_dir is not None:
        cfg.scratch_dir = cfg.scratch_dir.expanduser().resolve()
    if not cfg.stage_names():
        known = ", ".join(ordered(list(registry())))
        raise ConfigError(f"config error: no stage sections; add at least one of {known}")
    missing = [f"{n} (needs {up})" for n in cfg.stage_names() for up in registry()[n].inputs
               if getattr(cfg, up, None) is None]
    if missing:
        raise ConfigError(f"config error: stage inputs missing from the config: {', '.join(missing)}")
    try:
        for n in cfg.stage_names():
            input_stages(n, cfg.stage_names())
            check = getattr(cfg.stage_cfg(n), "check_root", None)  # across sections (train vs tokenize)
            if check is not None:
                check(cfg)
    except ValueError as exc:
        raise ConfigError(f"config error: {exc}") from None
    return cfg


def load(path: str | Path, overrides: list[str] | None = None) -> RootBase:
    data = load_dict(path)
    for item in overrides or []:
        apply_override(data, item)
    return validate(data)


SECRET_WORDS = ("secret", "key", "token", "password", "credential")


def _mask(d: dict) -> dict:
    return {k: "***" if any(w in k.lower() for w in SECRET_WORDS) else _mask(v) if isinstance(v, dict) else v
            for k, v in d.items()}


def public_dump(cfg: RootBase) -> dict:
    """The resolved config as logged with every run: credentials in storage_options are masked."""
    data = cfg.model_dump(mode="json", exclude_none=False)
    data["storage_options"] = _mask(data.get("storage_options") or {})
    return data


def resolved_yaml(cfg: RootBase) -> str:
    """The fully resolved config, as saved with every run."""
    return yaml.safe_dump(public_dump(cfg), allow_unicode=True, sort_keys=False)
