"""What Flagger and Argo Rollouts do with the example manifests (shadowgrpc/examples/rollout),
reduced to what the tests need: load and validate them against the vendored CRD schemas (README
here), call the gate as each tool calls a webhook / web metric, and judge the answer as the tool would.

Argo's ``successCondition`` / ``failureCondition`` are expr-lang expressions; ``argo_expr`` evaluates
the subset the examples use: literals (double- or single-quoted strings, numbers, true, false, nil),
array literals, ``result`` with member access (``a.b``, ``a["b"]``; a missing key is nil), ``==``,
``!=``, ``<``, ``<=``, ``>``, ``>=`` (ordering needs two numbers, else an error, as in expr), ``in``
(an array), ``!``/``not``, ``&&``/``and``, ``||``/``or`` and parentheses. ``argo_jsonpath`` evaluates
the Kubernetes JSONPath subset ``{$}``, ``{$.a.b}``, ``{.a.b}``, ``{$.a['b']}``. Argo's argument
templating is ``{{args.NAME}}`` (spaces allowed inside the braces).
"""

from __future__ import annotations

import copy
import http.client
import json
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "shadowgrpc" / "examples" / "rollout"
SCHEMAS = Path(__file__).resolve().parent
SCHEMA_OF = {"Canary": "flagger-canary.json", "AnalysisTemplate": "argo-analysistemplate.json", "Rollout": "argo-rollout.json"}


# -- manifests and schemas ------------------------------------------------------------------------
def load_docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


def strict(schema: dict) -> dict:
    """``schema`` with additionalProperties: false on every object schema that lists properties and
    neither preserves unknown fields nor sets additionalProperties (kubectl's strict validation)."""
    s = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(s)
    return s


def validate(doc: dict) -> None:
    """Raise jsonschema.ValidationError unless ``doc`` fits its kind's vendored CRD schema."""
    schema = strict(json.loads((SCHEMAS / SCHEMA_OF[doc["kind"]]).read_text()))
    jsonschema.Draft7Validator(schema).validate(doc)


def at(url: str, hostport: str, scheme: str = "http") -> str:
    """``url`` with its scheme and host:port replaced (the test's gate instead of the cluster's)."""
    u = urlsplit(url)
    return urlunsplit((scheme, hostport, u.path, u.query, u.fragment))


# -- HTTP, as the tools send it -------------------------------------------------------------------
def request(method: str, url: str, body: bytes | None = None, headers: dict | None = None, ssl_context=None) -> tuple[int, bytes]:
    u = urlsplit(url)
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ssl_context, timeout=30) if u.scheme == "https" else http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def flagger_call(canary: dict, hook: dict, hostport: str, phase: str, token: str, ssl_context=None) -> tuple[bool, int, str]:
    """POST the webhook as Flagger does (pkg/controller/webhook.go: JSON payload, Content-Type
    application/json; a status above 202 fails the check): (proceed, status, body)."""
    meta = {k: (token if k == "token" else v) for k, v in (hook.get("metadata") or {}).items()}
    payload = {"name": canary["metadata"]["name"], "namespace": canary["metadata"]["namespace"], "phase": phase, "checksum": "5f8d7c6b4a", "metadata": meta}
    scheme = "https" if ssl_context is not None else "http"
    status, body = request("POST", at(hook["url"], hostport, scheme), json.dumps(payload).encode(), {"Content-Type": "application/json"}, ssl_context)
    return status <= 202, status, body.decode()


_ARG = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+?)\s*\}\}")


def argo_args(template: dict, given: list[dict], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The AnalysisRun's argument values: the Rollout step's, else the template's defaults; a
    valueFrom.secretKeyRef from ``secrets[(name, key)]``."""
    out: dict[str, str] = {}
    for a in [*template["spec"].get("args", []), *given]:
        if "value" in a:
            out[a["name"]] = a["value"]
        elif "valueFrom" in a:
            ref = a["valueFrom"]["secretKeyRef"]
            out[a["name"]] = secrets[(ref["name"], ref["key"])]
    return out


def argo_measure(metric: dict, args: dict[str, str], hostport: str, ssl_context=None) -> tuple[str, object]:
    """One measurement of a ``web`` metric as Argo's webmetric provider takes it: (phase, result),
    phase Successful / Failed / Inconclusive / Error (utils/evaluate.EvaluateResult)."""
    web = metric["provider"]["web"]

    def sub(s: str) -> str:
        return _ARG.sub(lambda m: args[m.group(1)], s)

    headers = {h["key"]: sub(h["value"]) for h in web.get("headers", [])}
    scheme = "https" if ssl_context is not None else "http"
    status, body = request(web.get("method", "GET"), at(sub(web["url"]), hostport, scheme), None, headers, ssl_context)
    if not 200 <= status < 300:
        return "Error", f"received non 2xx response code: {status}"
    result = argo_jsonpath(json.loads(body), web.get("jsonPath", "{$}"))
    try:
        ok = bool(argo_expr(metric["successCondition"], result)) if metric.get("successCondition") else None
        bad = bool(argo_expr(metric["failureCondition"], result)) if metric.get("failureCondition") else None
    except ExprError as e:
        return "Error", str(e)
    if ok is None and bad is None:
        return "Successful", result
    if bad is None:
        bad = not ok
    if ok is None:
        ok = not bad
    return ("Failed" if bad else "Successful" if ok else "Inconclusive"), result


def argo_jsonpath(data, path: str):
    m = re.fullmatch(r"\{\s*\$?((?:\.[A-Za-z0-9_-]+|\['[^']*'\])*)\s*\}", path)
    if m is None:
        raise ValueError(f"JSONPath outside the supported subset: {path!r}")
    for seg in re.findall(r"\.([A-Za-z0-9_-]+)|\['([^']*)'\]", m.group(1)):
        data = data[seg[0] or seg[1]]
    return data


# -- expr-lang subset -----------------------------------------------------------------------------
class ExprError(Exception):
    pass


_TOK = re.compile(r"\s*(?:(\d+\.\d*|\.\d+|\d+)|\"((?:[^\"\\]|\\.)*)\"|'((?:[^'\\]|\\.)*)'|(&&|\|\||==|!=|<=|>=|[<>!()\[\].,])|([A-Za-z_][A-Za-z0-9_]*))")


def _tokens(src: str) -> list[tuple[str, object]]:
    out, pos = [], 0
    src = src.rstrip()
    while pos < len(src):
        m = _TOK.match(src, pos)
        if m is None or m.end() == pos:
            raise ExprError(f"cannot parse {src[pos:]!r}")
        pos = m.end()
        num, dq, sq, op, ident = m.groups()
        if num is not None:
            out.append(("lit", float(num) if "." in num else int(num)))
        elif dq is not None or sq is not None:
            out.append(("lit", json.loads('"' + (dq if dq is not None else sq.replace('"', '\\"')) + '"')))
        elif op is not None:
            out.append(("op", op))
        else:
            out.append(("op", ident) if ident in ("and", "or", "not", "in") else ("lit", {"true": True, "false": False, "nil": None}[ident]) if ident in ("true", "false", "nil") else ("id", ident))
    return out


def argo_expr(src: str, result):
    toks = _tokens(src)
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else ("end", None)

    def take(kind=None, value=None):
        nonlocal pos
        t = peek()
        if (kind and t[0] != kind) or (value is not None and t[1] != value):
            raise ExprError(f"expected {value or kind} in {src!r}, got {t[1]!r}")
        pos += 1
        return t

    def ordered(a, b, op):
        if not (isinstance(a, (int, float)) and isinstance(b, (int, float))) or isinstance(a, bool) or isinstance(b, bool):
            raise ExprError(f"invalid operation: {a!r} {op} {b!r}")
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]

    def primary():
        t = take()
        if t[0] == "lit":
            v = t[1]
        elif t == ("op", "("):
            v = orexpr()
            take("op", ")")
        elif t == ("op", "["):
            v = []
            while peek() != ("op", "]"):
                v.append(orexpr())
                if peek() == ("op", ","):
                    take()
            take("op", "]")
        elif t[0] == "id":
            if t[1] != "result":
                raise ExprError(f"unknown name {t[1]!r}")
            v = result
            while peek() in (("op", "."), ("op", "[")):
                if take()[1] == ".":
                    key = take("id")[1]
                else:
                    key = orexpr()
                    take("op", "]")
                v = v.get(key) if isinstance(v, dict) else v[key] if isinstance(v, list) and isinstance(key, int) else None
        else:
            raise ExprError(f"unexpected {t[1]!r} in {src!r}")
        return v

    def cmp():
        a = primary()
        t = peek()
        if t[0] == "op" and t[1] in ("==", "!=", "<", "<=", ">", ">=", "in"):
            take()
            b = primary()
            if t[1] == "==":
                return a == b and type(a) is type(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b)
            if t[1] == "!=":
                return not (a == b and type(a) is type(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b))
            if t[1] == "in":
                if not isinstance(b, list):
                    raise ExprError(f"'in' needs an array, got {b!r}")
                return a in b
            return ordered(a, b, t[1])
        return a

    def notexpr():
        if peek() in (("op", "!"), ("op", "not")):
            take()
            return not _bool(notexpr())
        return cmp()

    def andexpr():
        v = notexpr()
        while peek() in (("op", "&&"), ("op", "and")):
            take()
            w = notexpr()
            v = _bool(v) and _bool(w)
        return v

    def orexpr():
        v = andexpr()
        while peek() in (("op", "||"), ("op", "or")):
            take()
            w = andexpr()
            v = _bool(v) or _bool(w)
        return v

    v = orexpr()
    if pos != len(toks):
        raise ExprError(f"trailing {toks[pos][1]!r} in {src!r}")
    return v


def _bool(v) -> bool:
    if not isinstance(v, bool):
        raise ExprError(f"a condition needs a bool, got {v!r}")
    return v
