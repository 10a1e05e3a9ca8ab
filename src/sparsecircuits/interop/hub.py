"""Released model folders on the Hugging Face Hub, fetched through ``huggingface_hub``.

``hf://OWNER/NAME[@REVISION]/SUBFOLDER`` (the Hub's own fsspec spelling) or a repository,
revision and subfolder given apart.  ``snapshot_download`` does the work, so the Hub's
cache (``HF_HUB_CACHE`` / ``HF_HOME``), offline mode (``HF_HUB_OFFLINE=1``), tokens and
revision pinning behave as in every other tool that uses it; only the subfolder's files
are fetched.  A revision may be a branch, a tag or a commit hash; the commit the files
came from is returned, so an import records exactly what it read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

PREFIX = "hf://"
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class HubSource:
    repo_id: str
    subfolder: str = ""
    revision: str | None = None

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{PREFIX}{self.repo_id}{rev}" + (f"/{self.subfolder}" if self.subfolder else "")


def parse_hub_url(url: str) -> HubSource:
    """``hf://owner/name[@rev][/sub/folder]`` -> HubSource; UserError when malformed."""
    if not url.startswith(PREFIX):
        raise UserError(f"not a Hub address (expected {PREFIX}OWNER/NAME[@REVISION]/SUBFOLDER): {url}")
    parts = url[len(PREFIX):].strip("/").split("/")
    if len(parts) < 2:
        raise UserError(f"a Hub address names a repository OWNER/NAME: {url}")
    name, _, revision = parts[1].partition("@")
    return _checked(HubSource(f"{parts[0]}/{name}", "/".join(parts[2:]), revision or None))


def _checked(src: HubSource) -> HubSource:
    if not _REPO.match(src.repo_id):
        raise UserError(f"not a Hub repository id (OWNER/NAME): {src.repo_id!r}")
    if any(p in ("", ".", "..") for p in src.subfolder.split("/")) and src.subfolder:
        raise UserError(f"bad subfolder {src.subfolder!r}")
    return src


def hub_source(repo_id: str, subfolder: str | None = None, revision: str | None = None) -> HubSource:
    return _checked(HubSource(repo_id, (subfolder or "").strip("/"), revision))


def fetch_model_folder(src: HubSource) -> tuple[Path, str]:
    """The local folder holding ``src``'s files (downloaded or from the cache) and the commit."""
    try:
        import huggingface_hub
        from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise UserError("reading from the Hub needs huggingface_hub: pip install 'sparsecircuits[hub]'") from None
    patterns = [f"{src.subfolder}/*"] if src.subfolder else None
    try:
        root = Path(huggingface_hub.snapshot_download(src.repo_id, revision=src.revision, allow_patterns=patterns))
    except LocalEntryNotFoundError:
        raise UserError(f"{src} is not in the Hub cache and cannot be downloaded (offline, or no network); "
                        "unset HF_HUB_OFFLINE or fetch it once while online") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot fetch {src}: {first[:300]}") from None
    folder = root / src.subfolder if src.subfolder else root
    if not folder.is_dir():
        raise UserError(f"{src}: the repository has no folder {src.subfolder!r} at this revision")
    return folder, root.name  # snapshots/<commit>
