"""A botocore model loader that finds one service's model without first listing every service.

Before it loads a model, botocore's Loader checks the service is known by walking its whole search path:
~400 service folders, a listdir and a file check or two each, for every model type a client needs
(service-2, endpoint-rule-set-1, paginators-1): 15-50 ms of every ``ssmfab`` command's start-up here.
This loader asks the same question of the one service's folders, and loads exactly as botocore does.
"""

from __future__ import annotations

import os
from typing import Any

from botocore.exceptions import DataNotFoundError, UnknownServiceError
from botocore.loaders import Loader, instance_cache


class DirectLoader(Loader):
    """botocore's Loader with a per-service existence check (same search path, same models, same errors)."""

    @instance_cache
    def load_service_model(self, service_name: str, type_name: str, api_version: str | None = None) -> Any:
        # botocore's own load_service_model, but for the line that lists every known service.
        try:
            self.list_api_versions(service_name, type_name)
        except DataNotFoundError:
            known = ", ".join(self.list_available_services(type_name))
            raise UnknownServiceError(service_name=service_name, known_service_names=known) from None
        if api_version is None:
            api_version = self.determine_latest_version(service_name, type_name)
        model = self.load_data(os.path.join(service_name, api_version, type_name))
        extras = self._find_extras(service_name, type_name, api_version)  # type: ignore[attr-defined]  # botocore's
        self._extras_processor.process(model, extras)  # type: ignore[attr-defined]  # private, unstubbed helpers
        return model


def direct_loader(search_paths: list[str]) -> DirectLoader:
    """A DirectLoader searching exactly ``search_paths``, in that order."""
    return DirectLoader(extra_search_paths=list(search_paths), include_default_search_paths=False)
