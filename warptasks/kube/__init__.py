"""Kubernetes and OpenShift manifests from the same plan that builds and starts the app (``warp kube``).

Pure generation: :func:`~warptasks.kube.manifests.plan_manifests` turns the detected
:class:`~warptasks.detect.AppSpec` and :class:`~warptasks.kube.manifests.KubeOptions` into plain dicts, one per
manifest, which :func:`~warptasks.kube.manifests.to_files` writes as YAML with a ``kustomization.yaml``.
"""

from .manifests import KubeOptions, Manifest, plan_manifests, to_files, to_yaml

__all__ = ["KubeOptions", "Manifest", "plan_manifests", "to_files", "to_yaml"]
