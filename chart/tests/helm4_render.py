#!/usr/bin/env python3
"""Renders a chart with Helm v4's SDK (PyPI helm-python-sdk, installed by tests/run.sh into
~/.cache/dray-tools/helm-sdk, or DRAY_HELM_SDK): a client-side dry-run install, as `helm
template` does, against no cluster. Prints JSON: {"manifest": ..., "capabilities": ...}.

    helm4_render.py CHART VALUES_JSON_FILE RELEASE NAMESPACE

The capabilities are what the chart's templates would see (read by rendering a probe chart), so
the test can give Dray the same.
"""
import json
import os
import sys
import tempfile

sdk = os.environ.get("DRAY_HELM_SDK") or os.path.expanduser("~/.cache/dray-tools/helm-sdk")
sys.path.insert(0, sdk)
import helm_python as helm  # noqa: E402

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
users: [{name: none, user: {token: none}}]
"""

chart, values_file, release, namespace = sys.argv[1:5]
with open(values_file) as f:
    values = json.load(f)
cfg = helm.Config(kubeconfig_content=KUBECONFIG, storage_driver="memory", namespace=namespace)
rendered = cfg.install(chart, release, values, dry_run="client", namespace=namespace)
with tempfile.TemporaryDirectory() as probe:
    os.makedirs(os.path.join(probe, "templates"))
    with open(os.path.join(probe, "Chart.yaml"), "w") as f:
        f.write("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    with open(os.path.join(probe, "templates", "caps.yaml"), "w") as f:
        f.write(
            "kube: {{ .Capabilities.KubeVersion.Version | quote }}\n"
            "apis: {{ .Capabilities.APIVersions | toJson | quote }}\n"
        )
    caps = cfg.install(probe, "probe", {}, dry_run="client", namespace=namespace)
print(json.dumps({"manifest": rendered.get("manifest", ""), "capabilities": caps.get("manifest", "")}))
