#!/usr/bin/env python3
"""Writes schemas.json: the OpenAPI v3 component schemas kube-sim serves
under /openapi/v3 (what `kubectl explain` reads), for the kinds it lists
below and every type they reach.

The schemas (descriptions, types, formats, required fields) are those of the
Kubernetes API, read from the k8s-openapi crate's schemars impls (generated
from the API server's own OpenAPI document) in the cargo registry; the
x-kubernetes-group-version-kind and patch-strategy extensions are added
here. Run it from anywhere: python3 generate.py [path/to/k8s-openapi/src/v1_37]
"""

import glob
import json
import os
import re
import sys

KINDS = {
    "io.k8s.api.core.v1.Pod": ("", "v1", "Pod"),
    "io.k8s.api.core.v1.Service": ("", "v1", "Service"),
    "io.k8s.api.core.v1.ConfigMap": ("", "v1", "ConfigMap"),
    "io.k8s.api.core.v1.Secret": ("", "v1", "Secret"),
    "io.k8s.api.core.v1.Namespace": ("", "v1", "Namespace"),
    "io.k8s.api.core.v1.Node": ("", "v1", "Node"),
    "io.k8s.api.core.v1.ServiceAccount": ("", "v1", "ServiceAccount"),
    "io.k8s.api.apps.v1.Deployment": ("apps", "v1", "Deployment"),
    "io.k8s.api.apps.v1.ReplicaSet": ("apps", "v1", "ReplicaSet"),
    "io.k8s.api.apps.v1.StatefulSet": ("apps", "v1", "StatefulSet"),
    "io.k8s.api.apps.v1.DaemonSet": ("apps", "v1", "DaemonSet"),
}

# Lists merged by key in strategic merge patches (the +patchMergeKey tags).
MERGE_KEYS = {
    ("io.k8s.api.core.v1.PodSpec", "containers"): "name",
    ("io.k8s.api.core.v1.PodSpec", "initContainers"): "name",
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers"): "name",
    ("io.k8s.api.core.v1.PodSpec", "volumes"): "name",
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets"): "name",
    ("io.k8s.api.core.v1.PodSpec", "hostAliases"): "ip",
    ("io.k8s.api.core.v1.Container", "env"): "name",
    ("io.k8s.api.core.v1.Container", "ports"): "containerPort",
    ("io.k8s.api.core.v1.Container", "volumeMounts"): "mountPath",
    ("io.k8s.api.core.v1.Container", "volumeDevices"): "devicePath",
    ("io.k8s.api.core.v1.ServiceSpec", "ports"): "port",
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences"): "uid",
    ("io.k8s.api.core.v1.PodStatus", "conditions"): "type",
    ("io.k8s.api.core.v1.NodeStatus", "conditions"): "type",
    ("io.k8s.api.core.v1.NodeStatus", "addresses"): "type",
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions"): "type",
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions"): "type",
}

SUB = re.compile(
    r'\(\{\s*let mut schema_obj = __gen\.subschema_for::<(crate::[A-Za-z0-9_:]+)>\(\);\s*'
    r'schema_obj\.ensure_object\(\)\.insert\("description"\.into\(\), ("(?:[^"\\]|\\.)*")\.into\(\)\);\s*'
    r'schema_obj\s*\}\)'
)
BARE = re.compile(r'\(?__gen\.subschema_for::<(crate::[A-Za-z0-9_:]+)>\(\)\)?')


def strip_trailing_commas(text):
    out, in_str, esc = [], False, False
    for i, c in enumerate(text):
        if in_str:
            out.append(c)
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
            continue
        if c == '"':
            in_str = True
        elif c == ",":
            j = i + 1
            while j < len(text) and text[j] in " \t\r\n":
                j += 1
            if j < len(text) and text[j] in "}]":
                continue
        out.append(c)
    return "".join(out)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else glob.glob(
        os.path.expanduser("~/.cargo/registry/src/*/k8s-openapi-0.29.0/src/v1_37"))[0]
    names, bodies = {}, {}
    for path in glob.glob(os.path.join(root, "**", "*.rs"), recursive=True):
        src = open(path).read()
        m = re.search(r'impl crate::schemars::JsonSchema for (\w+) \{\s*fn schema_name\(\) -> std::borrow::Cow<\'static, str> \{\s*"([^"]+)"\.into\(\)', src)
        if not m:
            continue
        module = os.path.relpath(os.path.dirname(path), root).replace(os.sep, "::")
        names["crate::" + module + "::" + m.group(1)] = m.group(2)
        start = src.index("crate::schemars::json_schema!(", m.end()) + len("crate::schemars::json_schema!(")
        depth, i = 0, start
        in_str = esc = False
        while True:
            c = src[i]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c in "({[":
                depth += 1
            elif c in ")}]":
                if depth == 0:
                    break
                depth -= 1
            i += 1
        bodies[m.group(2)] = src[start:i]

    def ref(rust):
        return "#/components/schemas/" + names[rust]

    schemas = {}
    for name, body in bodies.items():
        body = SUB.sub(lambda m: '{"allOf": [{"$ref": "%s"}], "description": %s}' % (ref(m.group(1)), m.group(2)), body)
        body = BARE.sub(lambda m: '{"$ref": "%s"}' % ref(m.group(1)), body)
        schemas[name] = json.loads(strip_trailing_commas(body))

    # The closure of the kinds.
    keep, todo = set(), list(KINDS)
    while todo:
        n = todo.pop()
        if n in keep:
            continue
        keep.add(n)
        todo.extend(re.findall(r'#/components/schemas/([A-Za-z0-9_.]+)', json.dumps(schemas[n])))
    out = {}
    for n in sorted(keep):
        s = schemas[n]
        if n in KINDS:
            g, v, k = KINDS[n]
            s["x-kubernetes-group-version-kind"] = [{"group": g, "kind": k, "version": v}]
        for (t, field), key in MERGE_KEYS.items():
            if t == n and field in s.get("properties", {}):
                s["properties"][field]["x-kubernetes-patch-merge-key"] = key
                s["properties"][field]["x-kubernetes-patch-strategy"] = "merge"
        out[n] = s
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "schemas.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print(len(out), "schemas,", os.path.getsize(os.path.join(here, "schemas.json")), "bytes")


if __name__ == "__main__":
    main()
