"""A Python package index (the simple API, PEP 503 HTML or PEP 691 JSON): which versions of a
package it serves. Used to fill `{{latest-pypi-version}}` in curated environments."""

from __future__ import annotations

from collections.abc import Callable

from controller.core.errors import RetryLater

PYPI = "https://pypi.org/simple/"
TIMEOUT = 30.0


class PackageIndexError(RetryLater):
    """The index could not be asked (retry later); the message names the index, not a secret."""


class PackageIndex:
    def __init__(
        self,
        url: str = PYPI,
        *,
        credentials: Callable[[], tuple[str, str]] | None = None,
        ca_file: str | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        self.url = url.rstrip("/") + "/"
        self._credentials = credentials
        self._ca_file = ca_file
        self._timeout = timeout

    def versions(self, package: str) -> list[str]:
        """Every version the index has files for (yanked ones left out); [] when it has no such
        package."""
        import requests  # noqa: PLC0415 - only when an index is asked
        from pypi_simple import NoSuchProjectError, PyPISimple  # noqa: PLC0415 - 0.5 s to import

        session = requests.Session()
        session.trust_env = False
        if self._ca_file:
            session.verify = self._ca_file
        auth = self._credentials() if self._credentials is not None else None
        try:
            with PyPISimple(self.url, session=session, auth=auth) as client:
                page = client.get_project_page(package, timeout=self._timeout)
        except NoSuchProjectError:
            return []
        except (requests.RequestException, ValueError, OSError) as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            why = f"HTTP {status}" if status else type(exc).__name__
            raise PackageIndexError(f"package index {self.url} did not answer ({why})") from None
        finally:
            session.close()
        return sorted({p.version for p in page.packages if p.version and not p.is_yanked})
