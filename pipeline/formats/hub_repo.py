"""Component directories on the Hugging Face Hub: the one download and upload mechanism that
sparse diffs and adapters share (``SparseDiff.from_pretrained``, ``load_adapter_pretrained``,
``ltsft diff push``, ``ltsft adapter push``).

A component on the Hub is the component directory as written here (checked tensors file +
JSON description, plus a README.md model card), so a download is read by the same checked
loader as a local directory: size and sha256 are verified whatever the source.

Every failure is one line naming the repo. HF_HUB_OFFLINE is read when called, not when
huggingface_hub is imported (its own constant is frozen at import), so a push refuses at once
and a pull is served from the local Hub cache only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.core.errors import LtsftError
from pipeline.formats.checked import one_line

LIBRARY_NAME = "ltsft"  # the model card's library_name, and the user agent of downloads
LOGIN = "log in with `hf auth login` or set HF_TOKEN"


class HubRepoError(LtsftError):
    """A component that cannot be pulled from or pushed to the Hub; one line naming the repo."""


def offline() -> bool:
    """Whether HF_HUB_OFFLINE asks for no network (any value but empty, 0, false, no, off)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off")


def _reason(err: BaseException, revision: str | None) -> str:
    """What went wrong, short: the Hub's errors run over several lines and name no repo."""
    from huggingface_hub import errors

    if isinstance(err, errors.RevisionNotFoundError):
        return f"no revision {revision!r}"
    if isinstance(err, errors.GatedRepoError):
        return f"gated repo: accept its terms on the Hub and {LOGIN}"
    if isinstance(err, errors.RepositoryNotFoundError):
        return f"no such repo, or a private one ({LOGIN})"
    if isinstance(err, errors.OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set"
    if isinstance(err, errors.LocalEntryNotFoundError):
        why = "HF_HUB_OFFLINE is set" if offline() else "the Hub cannot be reached"
        return f"{why} and it is not in the local Hub cache"
    text = one_line(err)
    return text if len(text) <= 200 else text[:197] + "..."


def local_or_download(repo_id_or_dir: str | Path, revision: str | None = None, what: str = "component") -> Path:
    """A local directory as it is; otherwise the Hub repo ``repo_id_or_dir`` at ``revision``,
    downloaded (or found in the local Hub cache) with ``snapshot_download``."""
    path = Path(repo_id_or_dir)
    if path.is_dir():
        return path
    name = str(repo_id_or_dir)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        folder = snapshot_download(name, revision=revision, local_files_only=offline(), library_name=LIBRARY_NAME)
    except HFValidationError:
        raise HubRepoError(f"{name}: neither a local directory nor a Hub repo id (owner/name)") from None
    except Exception as err:  # noqa: BLE001 — network, HTTP and cache errors alike: one line naming the repo
        at = f"@{revision}" if revision else ""
        raise HubRepoError(f"{name}{at}: cannot download the {what} from the Hugging Face Hub "
                           f"({_reason(err, revision)})") from None
    return Path(folder)


def make_api() -> Any:
    """The Hub client (tests replace this with a local fake)."""
    from huggingface_hub import HfApi

    return HfApi(library_name=LIBRARY_NAME)


def check_can_push(repo_id: str) -> None:
    """Refuse before any work when the push cannot happen: offline, or not an owner/name id."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubRepoError(f"{repo_id}: not a Hub repo id (owner/name)") from None
    if offline():
        raise HubRepoError(f"{repo_id}: not pushed: HF_HUB_OFFLINE is set (--local-dir DIR writes the folder "
                           "that would be uploaded, without network)")


def upload(folder: Path, repo_id: str, private: bool = False, message: str = "Upload with ltsft",
           api: Any = None) -> str:
    """Create the model repo ``repo_id`` if needed and upload ``folder``'s files to its root;
    return the repo's URL. ``private`` applies only when the repo is created."""
    check_can_push(repo_id)
    api = api if api is not None else make_api()
    try:
        url = api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", commit_message=message)
    except Exception as err:  # noqa: BLE001 — auth, HTTP and network errors alike: one line naming the repo
        raise HubRepoError(f"{repo_id}: not pushed to the Hugging Face Hub ({_reason(err, None)})") from None
    return str(url)
