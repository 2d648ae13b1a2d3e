"""Domain errors of the image store: a stable code, an HTTP status, a message naming the culprit.

Request errors are raised to the HTTP edge. Download failures end an image's download: the image
then shows state `failed` with the error's code and message (nothing of it is left on disk).
"""

from __future__ import annotations

from agentkit import errors as base


class ImageStoreError(base.HostStackError):
    """Base of the image store's failures."""


class Unauthorized(ImageStoreError, base.Unauthorized):
    pass


class InvalidId(ImageStoreError, base.Invalid):
    msg_fmt = "image id {value!r} is not valid (letters, digits, '-' and '_', up to 64)"


class TicketRefused(ImageStoreError, base.Unauthorized):
    code = "ticket_refused"
    msg_fmt = "ticket refused: {reason}"


class RootUnusable(ImageStoreError):
    """The agent cannot start on its `root`: it ends with this one line."""

    code, status = "root_unusable", 500
    msg_fmt = "root {root}: {reason}"


class UrlRefused(ImageStoreError, base.Invalid):
    code = "url_refused"
    msg_fmt = "{reason}"


class InvalidUpload(ImageStoreError, base.Invalid):
    code = "invalid_upload"
    msg_fmt = "{reason}"


class ImageNotFound(ImageStoreError, base.NotFound):
    code = "image_not_found"
    msg_fmt = "image {image_id} does not exist"


class ImageExists(ImageStoreError, base.Conflict):
    code = "image_exists"
    msg_fmt = "image {image_id} already exists with other parameters ({detail}); delete it first"


class NotReady(ImageStoreError, base.NotReady):
    msg_fmt = "image {image_id} is {state}, not ready"


class DownloadFailed(ImageStoreError):
    """Ends a download; the image shows the code and message."""

    code, status = "download_failed", 422


class SourceFailed(DownloadFailed):
    code, status = "source_failed", 502
    msg_fmt = "{url}: {reason}"


class ChecksumMismatch(DownloadFailed):
    code = "checksum_mismatch"
    msg_fmt = "{algorithm} of the downloaded data is {actual}, expected {expected}; nothing was kept"


class FormatRejected(DownloadFailed):
    code = "format_rejected"
    msg_fmt = "{reason}"


class InsufficientSpace(DownloadFailed):
    code, status = "insufficient_space", 507
    msg_fmt = "{root}: {needed} more bytes needed, {available} available (reserve {reserve})"


class TooLarge(DownloadFailed):
    code, status = "image_too_large", 413
    msg_fmt = "{what} is more than max_image_size ({limit} bytes)"


class StorageFailed(DownloadFailed):
    code, status = "storage_failed", 500
    msg_fmt = "{root}: {reason}"
