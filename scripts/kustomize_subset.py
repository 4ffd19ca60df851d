"""Render a kustomization offline: the subset of kustomize that infra/k8s uses, nothing more.

    .venv/bin/python scripts/kustomize_subset.py infra/k8s/overlays/gpu > gpu.yaml

No kustomize or kubectl binary is installable here without the internet, so the tests
render the overlays with this. Supported (same meaning as kustomize; anything else in a
kustomization is refused, so the output never silently differs from ``kubectl kustomize``):
``resources`` (files and folders with a kustomization), ``namespace``, ``labels`` (pairs,
added to metadata.labels), ``images`` (name -> newName/newTag/digest on containers), and
``patches`` with ``path`` + ``target`` (kind, name) holding JSON 6902 operations
(add/replace/remove on ``/a/b/0`` paths; ``-`` appends).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "namespace", "labels", "resources", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass",
                  "StorageClass"}


class KustomizeError(Exception):
    """A kustomization this subset cannot render, naming the file and field."""


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def _apply_op(doc: dict[str, Any], op: dict[str, Any], where: str) -> None:
    parts = _pointer(op["path"])
    parent: Any = doc
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    kind = op.get("op")
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, copy.deepcopy(op["value"]))
        elif kind == "replace":
            parent[index] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del parent[index]
        else:
            raise KustomizeError(f"{where}: op {kind!r} is not supported (add, replace, remove)")
        return
    if kind in ("add", "replace"):
        if kind == "replace" and last not in parent:
            raise KustomizeError(f"{where}: replace of missing {op['path']}")
        parent[last] = copy.deepcopy(op["value"])
    elif kind == "remove":
        del parent[last]
    else:
        raise KustomizeError(f"{where}: op {kind!r} is not supported (add, replace, remove)")


def _set_image(container: dict[str, Any], images: list[dict[str, Any]]) -> None:
    ref = container.get("image", "")
    name = ref.split("@")[0].rsplit(":", 1)[0] if ":" in ref.split("/")[-1] or "@" in ref else ref
    for img in images:
        if img["name"] == name:
            new = img.get("newName", name)
            if img.get("digest"):
                container["image"] = f"{new}@{img['digest']}"
            elif img.get("newTag"):
                container["image"] = f"{new}:{img['newTag']}"
            else:
                container["image"] = new + ref[len(name):]


def _pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Pod":
        return [spec]
    template = (spec.get("template") or {}).get("spec")
    return [template] if template else []


def render(folder: Path) -> list[dict[str, Any]]:
    """The objects of the kustomization in ``folder``, transformed as kustomize would."""
    kfile = folder / "kustomization.yaml"
    if not kfile.is_file():
        raise KustomizeError(f"{folder}: no kustomization.yaml")
    k = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(k) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{kfile}: fields {sorted(unknown)} are not in the supported subset")
    docs: list[dict[str, Any]] = []
    for res in k.get("resources") or []:
        path = (folder / res).resolve()
        docs += render(path) if path.is_dir() else _load(path)
    _patch(docs, k, folder, kfile)
    _transform(docs, k)
    return docs


def _patch(docs: list[dict[str, Any]], k: dict[str, Any], folder: Path, kfile: Path) -> None:
    for patch in k.get("patches") or []:
        target = patch.get("target") or {}
        ops = yaml.safe_load((folder / patch["path"]).read_text())
        hits = [d for d in docs if d["kind"] == target.get("kind") and d["metadata"]["name"] == target.get("name")]
        if not hits:
            raise KustomizeError(f"{kfile}: patch {patch['path']} matches no {target}")
        for doc in hits:
            for op in ops:
                _apply_op(doc, op, f"{kfile}: patch {patch['path']}")


def _transform(docs: list[dict[str, Any]], k: dict[str, Any]) -> None:
    """namespace, labels, images and ServiceAccount subjects, on every object."""
    for doc in docs:
        meta = doc.setdefault("metadata", {})
        if k.get("namespace") and doc["kind"] not in CLUSTER_SCOPED:
            meta["namespace"] = k["namespace"]
        for entry in k.get("labels") or []:
            meta.setdefault("labels", {}).update(entry.get("pairs") or {})
        for pod in _pod_specs(doc):
            for ctr in [*(pod.get("containers") or []), *(pod.get("initContainers") or [])]:
                _set_image(ctr, k.get("images") or [])
        if doc["kind"] in ("RoleBinding", "ClusterRoleBinding") and k.get("namespace"):
            for subject in doc.get("subjects") or []:
                if subject.get("kind") == "ServiceAccount":
                    subject["namespace"] = k["namespace"]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: kustomize_subset.py FOLDER", file=sys.stderr)
        return 2
    try:
        docs = render(Path(argv[0]))
    except (KustomizeError, OSError, KeyError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False, width=120))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
