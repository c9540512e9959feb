"""Re-vendor the published CRD schemas the rollout examples are validated against (run by hand;
the output is committed): ``python tests/rollout_schemas/vendor.py FLAGGER_REPO ARGO_ROLLOUTS_REPO``
with two git checkouts (or bare mirrors) of github.com/fluxcd/flagger and
github.com/argoproj/argo-rollouts. Each schema is the CRD's ``openAPIV3Schema`` as published at
the recorded commit, with only these parts cut (replaced by ``{"type": "object",
"x-kubernetes-preserve-unknown-fields": true}`` so the files stay small): the AnalysisTemplate's
metric providers other than ``web`` and its ``job``-like pod specs, the Rollout's pod ``template``
and its traffic-routing / analysis-step providers we do not use. The README lists them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SOURCES = {
    "flagger-canary.json": ("fluxcd/flagger", "kustomize/base/flagger/crd.yaml", "Canary", "v1beta1", []),
    "argo-analysistemplate.json": (
        "argoproj/argo-rollouts", "manifests/crds/analysis-template-crd.yaml", "AnalysisTemplate", "v1alpha1",
        [("spec", "metrics", "*", "provider", "!web")],
    ),
    "argo-rollout.json": (
        "argoproj/argo-rollouts", "manifests/crds/rollout-crd.yaml", "Rollout", "v1alpha1",
        [("spec", "template"), ("spec", "strategy", "canary", "trafficRouting"), ("spec", "strategy", "blueGreen")],
    ),
}  # fmt: skip
OPAQUE = {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "description": "cut by vendor.py: not validated here"}


def _cut(schema: dict, path: tuple) -> None:
    """Replace the subschema at ``path`` (property names; "*" = array items; "!name" = every
    property but ``name``) with OPAQUE."""
    head, rest = path[0], path[1:]
    if head == "*":
        return _cut(schema["items"], rest)
    props = schema["properties"]
    if head.startswith("!"):
        for k in list(props):
            if k != head[1:]:
                props[k] = dict(OPAQUE)
        return None
    if not rest:
        props[head] = dict(OPAQUE)
        return None
    return _cut(props[head], rest)


def main(flagger: str, argo: str) -> None:
    roots = {"fluxcd/flagger": flagger, "argoproj/argo-rollouts": argo}
    for out, (repo, path, kind, version, cuts) in SOURCES.items():
        git = ["git", "-C", roots[repo]]
        commit = subprocess.check_output([*git, "rev-parse", "HEAD"], text=True).strip()
        docs = yaml.safe_load_all(subprocess.check_output([*git, "show", f"HEAD:{path}"], text=True))
        crd = next(d for d in docs if d and d["spec"]["names"]["kind"] == kind)
        schema = next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]
        for c in cuts:
            _cut(schema, c)
        schema["$comment"] = f"openAPIV3Schema of {kind} {crd['spec']['group']}/{version} from github.com/{repo} {path} at {commit}; cut: {cuts}"
        (HERE / out).write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True) + "\n")
        print(f"{out}: {repo}@{commit} {path} ({(HERE / out).stat().st_size} bytes)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
