"""Where stage outputs live: a local `work_dir`, or an fsspec URL (`s3://bucket/prefix`) with a local scratch mirror.

A local work_dir is both the store of record and the place stages work in (nothing below changes that case).
A URL work_dir is the store of record; stages still work on local paths, in a scratch mirror with the same layout
(config `scratch_dir`, default `<tmp>/zhgpt-scratch-<hash of the URL>`):

- before a stage runs, the runner fetches its input stages' manifest-listed files into the mirror (each one
  sha256-checked against the manifest; files the mirror already holds are not downloaded again);
- when it completes, the runner uploads every manifest-listed file and the stage's artifacts, then `manifest.json`
  last: a PUT is atomic per object, so the manifest stays the commit point and nothing is ever half-published;
- cache resolution, `status`, `verify` (re-hashing the stored objects) and `trace` read manifests from the store;
- Ray Train keeps its checkpoints in the store (`<stage dir>/.partial/ray`), so a new driver machine resumes there.

Endpoint and credentials: config `storage_options` (fsspec options, e.g. {endpoint_url: …, key: …}) and/or the
backend's usual environment (for s3fs: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any

from pipelines import dataset
from pipelines.dataset import CHUNK, FAILED, MANIFEST, PARTIAL, Manifest, read_manifest, sha256_file, write_manifest
from pipelines.io import ContractError, remove_temps, write_bytes

# Beside a stage directory: its forced rerun, and (during the swap) the output that rerun replaces.
NEXT, OLD = ".next", ".old"


class StorageError(RuntimeError):
    """The store of record cannot be used (unreachable endpoint, missing bucket, refused credentials): one line."""


def is_url(work_dir: Any) -> bool:
    return "://" in str(work_dir) and not str(work_dir).startswith("file://")


def default_scratch(url: str) -> Path:
    return Path(tempfile.gettempdir()) / f"zhgpt-scratch-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def _reason(exc: BaseException) -> str:
    text = (str(exc).splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Store:
    """A pipeline's stage directories: `<root>/<stage>/<key[:16]>/`, in the store of record and in the local mirror."""

    def __init__(self, root: str | Path, local: Path, options: dict[str, Any] | None = None):
        self.remote = is_url(root)
        self.root = str(root).rstrip("/") if self.remote else str(Path(root))
        self.local = Path(local)
        self.options = dict(options or {})

    @classmethod
    def of(cls, cfg: Any) -> "Store":
        return cls(cfg.work_dir, cfg.local_dir, getattr(cfg, "storage_options", None))

    @cached_property
    def _fs_base(self) -> tuple[Any, str]:
        import fsspec

        if not self.remote:
            return fsspec.filesystem("file"), str(self.local)
        try:
            # no listings cache: another process (a worker node, another run) may have written since
            return fsspec.core.url_to_fs(self.root, **{"use_listings_cache": False, **self.options})
        except (ImportError, ValueError, TypeError) as exc:
            raise StorageError(f"work_dir {self.root}: {_reason(exc)}") from None

    @property
    def fs(self) -> Any:
        return self._fs_base[0]

    def path(self, stage: str, key: str, rel: str = "") -> str:
        """A path inside the store's filesystem (no scheme)."""
        base = self._fs_base[1].rstrip("/")
        return f"{base}/{stage}/{key[:16]}" + (f"/{rel}" if rel else "")

    def uri(self, stage: str, key: str) -> str | Path:
        """The stage directory as users see it: the URL in the store, or the local path."""
        return f"{self.root}/{stage}/{key[:16]}" if self.remote else self.local_dir(stage, key)

    def local_dir(self, stage: str, key: str) -> Path:
        return self.local / stage / key[:16]

    def _io(self, what: str, fn, *args, **kw):
        """Run one filesystem call; any failure of the store itself becomes one StorageError line."""
        try:
            return fn(*args, **kw)
        except (ContractError, StorageError):
            raise
        except Exception as exc:  # botocore/aiohttp errors are not OSErrors
            raise StorageError(f"{what} {self.root}: {_reason(exc)}") from None

    # -- checks -----------------------------------------------------------------------------------------
    def check(self) -> None:
        """Before anything runs: the endpoint answers, the bucket exists and the credentials are accepted."""
        if not self.remote:
            return
        fs, base = self._fs_base  # a missing backend (s3fs not installed) is its own one-line error
        bucket = base.strip("/").split("/")[0]
        try:
            fs.ls(bucket, detail=False)
        except FileNotFoundError:
            raise StorageError(f"work_dir {self.root}: bucket {bucket!r} does not exist (create it first)") from None
        except PermissionError as exc:
            raise StorageError(f"work_dir {self.root}: access denied, check the credentials ({_reason(exc)})") from None
        except Exception as exc:
            raise StorageError(f"work_dir {self.root}: the store does not answer ({_reason(exc)})") from None

    # -- reading the store of record --------------------------------------------------------------------
    def read_manifest(self, stage: str, key: str) -> Manifest | None:
        if not self.remote:
            d = self.local_dir(stage, key)
            old = d.with_name(d.name + OLD)
            if not d.exists() and (old / MANIFEST).exists():  # a crash between the renames of _swap
                os.rename(old, d)
            return read_manifest(d)
        p = self.path(stage, key, MANIFEST)
        try:
            raw = self.fs.cat_file(p)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise StorageError(f"reading {self.root}: {_reason(exc)}") from None
        try:
            return Manifest.from_dict(json.loads(raw))
        except (ValueError, TypeError, KeyError) as exc:
            raise ContractError(f"{self.uri(stage, key)}/{MANIFEST}: unreadable manifest ({exc})") from exc

    def failure(self, stage: str, key: str) -> str | None:
        """The one-line error of the last failed attempt at this key, if that is where it stands."""
        if not self.remote:
            p = self.local_dir(stage, key) / FAILED
            return p.read_text().strip() if p.exists() else None
        try:
            return self.fs.cat_file(self.path(stage, key, FAILED)).decode().strip()
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise StorageError(f"reading {self.root}: {_reason(exc)}") from None

    def started(self, stage: str, key: str) -> bool:
        """Work exists at this key without a manifest (a killed run): in the mirror, or (checkpoints) in the store."""
        if self.local_dir(stage, key).exists():
            return True
        return self.remote and self._io("reading", self.fs.exists, self.path(stage, key))

    def has_older(self, stage: str) -> bool:
        """Some complete output of this stage exists (under any key)."""
        if not self.remote:
            root = self.local / stage
            return root.is_dir() and any((d / MANIFEST).exists() for d in root.iterdir() if d.is_dir())
        base = self._fs_base[1].rstrip("/")
        return bool(self._io("reading", self.fs.glob, f"{base}/{stage}/*/{MANIFEST}"))

    def verify(self, stage: str, key: str) -> list[str]:
        """Re-hash every shard against the manifest (streaming the stored objects); one line per bad shard."""
        if not self.remote:
            return dataset.verify(self.local_dir(stage, key))
        m = self.read_manifest(stage, key)
        if m is None:
            raise ContractError(f"{self.uri(stage, key)}: no {MANIFEST}; the stage is not complete")
        problems = []
        for name, out in m.outputs.items():
            for s in out.shards:
                url = f"{self.uri(stage, key)}/{s.path}"
                try:
                    got = self._sha256_remote(self.path(stage, key, s.path))
                except FileNotFoundError:
                    problems.append(f"{url}: missing (output {name})")
                    continue
                except Exception as exc:
                    raise StorageError(f"reading {self.root}: {_reason(exc)}") from None
                if got != s.sha256:
                    problems.append(f"{url}: sha256 {got[:16]}… != manifest {s.sha256[:16]}… (output {name})")
        return problems

    def _sha256_remote(self, path: str) -> str:
        h = hashlib.sha256()
        with self.fs.open(path, "rb", block_size=CHUNK) as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
        return h.hexdigest()

    # -- the runner's side ------------------------------------------------------------------------------
    def prepare(self, stage: str, key: str, fresh: bool) -> Path:
        """Make a directory ready for a run of the stage and return it. Resuming: the stage's own directory, with
        the old manifest/FAILED and the temporary files of writers that died with an earlier attempt dropped.
        Fresh (--force, --from, --only) over a complete output: a sibling `<key16>.next` directory, so that the
        complete output stays, here and in the store of record, until publish() puts its replacement in its
        place. Fresh over an incomplete one: the leftovers are deleted. Nothing of this stage runs yet, so no
        temporary file under it belongs to a live writer."""
        d = self.local_dir(stage, key)
        if fresh and self.read_manifest(stage, key) is not None:
            return self._beside(d)
        if fresh and d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True, exist_ok=True)
        (d / FAILED).unlink(missing_ok=True)
        (d / MANIFEST).unlink(missing_ok=True)
        remove_temps(d)
        if self.remote:
            remote = self.path(stage, key)
            if fresh:
                if self._io("reading", self.fs.exists, remote):
                    self._io("deleting from", self.fs.rm, remote, recursive=True)
            else:
                for name in (MANIFEST, FAILED):
                    if self._io("reading", self.fs.exists, f"{remote}/{name}"):
                        self._io("deleting from", self.fs.rm_file, f"{remote}/{name}")
        return d

    @staticmethod
    def _beside(d: Path) -> Path:
        work = d.with_name(d.name + NEXT)
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        return work

    @staticmethod
    def _swap(work: Path, d: Path) -> None:
        """Put a complete replacement in the place of the stage directory. Between the two renames the old
        directory is `<key16>.old`; read_manifest() moves it back if a crash left it there."""
        old = d.with_name(d.name + OLD)
        if old.exists():
            shutil.rmtree(old)
        if d.exists():
            os.rename(d, old)
        os.rename(work, d)
        shutil.rmtree(old, ignore_errors=True)

    def fetch(self, stage: str, key: str, manifest: Manifest) -> Path:
        """Bring a complete stage's manifest-listed files into the mirror, sha256-checked; return the mirror dir."""
        d = self.local_dir(stage, key)
        if not self.remote:
            return d
        text = manifest.to_json()
        if (d / MANIFEST).exists() and (d / MANIFEST).read_text() == text:
            return d  # the mirror was completed for exactly this manifest (it is written after the checks)
        want = [s for o in manifest.outputs.values() for s in o.shards]
        todo = [s for s in want if not ((d / s.path).exists() and (d / s.path).stat().st_size == s.bytes
                                        and sha256_file(d / s.path) == s.sha256)]
        for s in todo:
            (d / s.path).parent.mkdir(parents=True, exist_ok=True)
        if todo:
            self._io("downloading from", self.fs.get, [self.path(stage, key, s.path) for s in todo],
                     [str(d / s.path) for s in todo])
        for s in todo:
            if (got := sha256_file(d / s.path)) != s.sha256:
                (d / s.path).unlink()
                raise ContractError(f"{self.uri(stage, key)}/{s.path}: sha256 {got[:16]}… != manifest "
                                    f"{s.sha256[:16]}… (the stored object is damaged; see `zhgpt verify`)")
        write_manifest(d, manifest)
        return d

    def publish(self, stage: str, key: str, manifest: Manifest, extra: list[str] = (),
                work: Path | None = None) -> None:
        """Write the manifest in `work` (the directory prepare() gave) and move it into the stage's place; then
        upload the manifest-listed files and the extra (artifact) files, the manifest last. A complete output
        already in the store whose digests differ loses its manifest first: the objects about to be overwritten
        would no longer match it (a rerun of a deterministic stage uploads the same bytes and keeps it)."""
        d = self.local_dir(stage, key)
        work = Path(work) if work is not None else d
        write_manifest(work, manifest)
        if work != d:
            self._swap(work, d)
        if not self.remote:
            return
        old = self.read_manifest(stage, key)
        if old is not None and old.digests != manifest.digests:
            self._io("deleting from", self.fs.rm_file, self.path(stage, key, MANIFEST))
        rels = [s.path for o in manifest.outputs.values() for s in o.shards]
        rels += [r for r in extra if (d / r).is_file() and r not in rels]
        if rels:
            self._io("uploading to", self.fs.put, [str(d / r) for r in rels], [self.path(stage, key, r) for r in rels])
        self._io("uploading to", self.fs.pipe_file, self.path(stage, key, MANIFEST), manifest.to_json().encode())

    def drop_scratch(self, stage: str, key: str) -> None:
        """After the manifest: remove the stage's `.partial/` working area and writers' temp files (locally, and
        in the store of record, where Ray Train keeps its checkpoints). Best effort: the stage is complete."""
        d = self.local_dir(stage, key)
        shutil.rmtree(d / PARTIAL, ignore_errors=True)
        remove_temps(d)
        if self.remote:
            try:
                if self.fs.exists(self.path(stage, key, PARTIAL)):
                    self.fs.rm(self.path(stage, key, PARTIAL), recursive=True)
            except Exception:  # a leftover costs storage, not correctness
                pass

    def mark_failed(self, stage: str, key: str, message: str, work: Path | None = None) -> None:
        """Record the failed attempt (best effort: on a full or read-only disk the error itself is what counts)."""
        try:
            write_bytes(Path(work or self.local_dir(stage, key)) / FAILED, (message + "\n").encode())
        except OSError:
            pass
        if work is not None and Path(work) != self.local_dir(stage, key):
            return  # a forced rerun beside a complete output: that output stands
        if self.remote:
            try:
                self.fs.pipe_file(self.path(stage, key, FAILED), (message + "\n").encode())
            except Exception:  # the stage's own error is the one to report
                pass


def stage_store(ctx: Any) -> tuple[Any, str]:
    """(fsspec filesystem, path) of a running stage's directory in the store of record (the local dir when local)."""
    store = getattr(ctx, "store", None)
    if store is None or not store.remote:
        import fsspec

        return fsspec.filesystem("file"), str(ctx.out_dir)
    return store.fs, store.path(ctx.name, ctx.cache_key)


def ray_storage(ctx: Any) -> tuple[str, Any]:
    """Ray Train's (storage_path, storage_filesystem) for a stage: its `.partial` area in the store of record."""
    store = getattr(ctx, "store", None)
    if store is None or not store.remote:
        return str(ctx.partial_dir), None
    import pyarrow.fs as pafs

    fs, path = stage_store(ctx)
    return f"{path}/{PARTIAL}", pafs.PyFileSystem(pafs.FSSpecHandler(fs))
