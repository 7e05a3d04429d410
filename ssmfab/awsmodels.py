"""Trimmed botocore service models: an EC2 client that knows only the calls ssmfab makes.

botocore parses a service's whole model when a client is created; EC2's has some 800 operations and takes
~0.15-0.25 s to load, more than a short ``ssmfab run`` spends on anything else. ssmfab calls one EC2
operation (DescribeInstances), so it ships that operation's slice of botocore's own model (same API version,
same shapes, documentation dropped) and puts it first on the session's model search path. If botocore ever
carries a newer EC2 API version, botocore's loader picks that one from its own data and nothing changes but
the speed. ``make models`` regenerates the slice; a test fails when it no longer matches installed botocore.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

MODELS_DIR = Path(__file__).resolve().parent / "models"
#: service -> the operations ssmfab calls on it (its client has no others).
TRIMMED: dict[str, tuple[str, ...]] = {"ec2": ("DescribeInstances",)}


def use_trimmed_models(botocore_session: Any) -> None:
    """Make clients created from ``botocore_session`` load the trimmed models (first on the search path), through
    a loader that does not list every service botocore knows first (see modelloader)."""
    from .modelloader import DirectLoader, direct_loader

    loader = botocore_session.get_component("data_loader")
    if not isinstance(loader, DirectLoader):
        paths = [path for path in loader.search_paths if path != str(MODELS_DIR)]
        botocore_session.register_component("data_loader", direct_loader([str(MODELS_DIR), *paths]))


def _shape_closure(model: dict[str, Any], operations: tuple[str, ...]) -> set[str]:
    shapes = model["shapes"]
    wanted: list[str] = []
    for name in operations:
        operation = model["operations"][name]
        wanted += [operation[key]["shape"] for key in ("input", "output") if key in operation]
        wanted += [error["shape"] for error in operation.get("errors", [])]
    keep: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name in keep:
            continue
        keep.add(name)
        shape = shapes[name]
        wanted += [shape[key]["shape"] for key in ("member", "key", "value") if key in shape]
        wanted += [member["shape"] for member in shape.get("members", {}).values()]
    return keep


def _undocumented(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _undocumented(v) for k, v in value.items() if k != "documentation"}
    if isinstance(value, list):
        return [_undocumented(v) for v in value]
    return value


def trim_service_model(model: dict[str, Any], operations: tuple[str, ...]) -> dict[str, Any]:
    """``model`` reduced to ``operations`` and every shape they reach, without documentation."""
    trimmed = {key: value for key, value in model.items() if key not in ("operations", "shapes", "documentation")}
    trimmed["operations"] = {name: _undocumented(model["operations"][name]) for name in operations}
    trimmed["shapes"] = {name: _undocumented(model["shapes"][name]) for name in sorted(_shape_closure(model, operations))}
    return trimmed


def write_trimmed_models(dest: Path = MODELS_DIR) -> list[Path]:
    """Regenerate the trimmed models from the installed botocore into ``dest``; the files written."""
    import botocore
    import botocore.session

    loader = botocore.session.get_session().get_component("data_loader")
    written: list[Path] = []
    for service, operations in TRIMMED.items():
        version = loader.determine_latest_version(service, "service-2")
        source = Path(botocore.__file__).resolve().parent / "data" / service / version
        folder = dest / service / version
        shutil.rmtree(dest / service, ignore_errors=True)
        folder.mkdir(parents=True)
        full = loader.load_service_model(service, "service-2", version)
        model = trim_service_model(full, operations)
        (folder / "service-2.json").write_text(json.dumps(model, indent=1, sort_keys=True) + "\n")
        pages = json.loads((source / "paginators-1.json").read_text())["pagination"]
        kept = {name: pages[name] for name in operations if name in pages}
        (folder / "paginators-1.json").write_text(json.dumps({"pagination": kept}, indent=1, sort_keys=True) + "\n")
        rules = source / "endpoint-rule-set-1.json.gz"
        (folder / "endpoint-rule-set-1.json").write_text(
            json.dumps(json.loads(gzip.decompress(rules.read_bytes())), indent=1, sort_keys=True) + "\n"
        )
        written += sorted(folder.iterdir())
    return written


if __name__ == "__main__":
    for path in write_trimmed_models():
        print(path.relative_to(MODELS_DIR.parent.parent))
