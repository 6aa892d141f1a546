"""Installs a chart with the real Helm library (helm-sdkpy, Helm v4) and
prints the result as JSON: {"ok": true, "release": {...}} or
{"ok": false, "error": "..."}. Exit 0 either way; the caller judges.

Usage: install.py KUBECONFIG NAMESPACE RELEASE CHART [VALUES.yaml]
"""
import asyncio
import json
import sys

import helm_sdkpy
import yaml


def main() -> None:
    kubeconfig, namespace, release, chart = sys.argv[1:5]
    values = {}
    if len(sys.argv) > 5:
        with open(sys.argv[5], encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
    config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=kubeconfig)
    try:
        result = asyncio.run(
            helm_sdkpy.Install(config).run(release, chart, values=values, create_namespace=True, wait=False)
        )
    except Exception as e:  # the caller reads the message
        print(json.dumps({"ok": False, "error": str(e)}))
        return
    print(json.dumps({"ok": True, "release": result}, default=str))


main()
