#!/usr/bin/env bash
# Checks Sluice's Grafana dashboards and Prometheus alert rules.
#
#   grafana/check.sh                                   static checks (promtool + dashboard lint)
#   grafana/check.sh --prometheus http://127.0.0.1:9090 [--require-data] [--rate-interval 1m]
#
# Static: `promtool check rules` and `promtool test rules` on grafana/alerts/; every dashboard
# in grafana/dashboards/ parses, has unique panel ids and a unique uid, the `datasource` and
# `instance` variables, and every PromQL expression (panel targets, variable queries, alert
# rules) references only metric names listed in grafana/metrics.txt.
# --prometheus URL: also evaluates every panel expression (with $instance and the other
# variables as `.*`, $__rate_interval/$__interval/$__range substituted) and every alert
# expression through URL/api/v1/query; any error fails.
# --require-data: every panel of the overview and consumer-group dashboards must also return
# at least one series.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prometheus=""
require_data=0
rate_interval="1m"

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --prometheus) prometheus="${2:?--prometheus needs a URL}"; shift 2 ;;
        --require-data) require_data=1; shift ;;
        --rate-interval) rate_interval="${2:?--rate-interval needs a duration}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "check.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
if [[ $require_data -eq 1 && -z $prometheus ]]; then
    echo "check.sh: --require-data needs --prometheus URL" >&2; exit 2
fi
command -v promtool >/dev/null || { echo "check.sh: promtool not found (apt-get install prometheus)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "check.sh: python3 not found" >&2; exit 2; }

echo "== promtool check rules"
promtool check rules "$here/alerts/sluice-alerts.yml" || { echo "FAIL: promtool check rules grafana/alerts/sluice-alerts.yml" >&2; exit 1; }
echo "== promtool test rules"
promtool test rules "$here/alerts/sluice-alerts.test.yml" || { echo "FAIL: promtool test rules grafana/alerts/sluice-alerts.test.yml" >&2; exit 1; }

echo "== dashboards and rule expressions"
python3 - "$here" "$prometheus" "$require_data" "$rate_interval" <<'PY'
import glob, json, os, re, sys, urllib.error, urllib.parse, urllib.request

try:
    import yaml
except ImportError:
    sys.exit("check.sh: python3 module yaml (PyYAML) is missing (apt-get install python3-yaml)")

here, prom, require_data, rate_interval = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3] == "1", sys.argv[4]
DATA_REQUIRED = {"sluice-overview", "sluice-consumer-groups"}   # dashboard uids
failures, warnings = [], []

# ---- allow-list: NAME TYPE per line; a histogram allows _bucket/_sum/_count only
allowed, histograms = set(), set()
for n, line in enumerate(open(os.path.join(here, "metrics.txt")), 1):
    line = line.split("#", 1)[0].split()
    if not line:
        continue
    if len(line) != 2 or line[1] not in ("counter", "gauge", "histogram", "summary"):
        sys.exit(f"grafana/metrics.txt:{n}: expected 'NAME TYPE' with TYPE counter|gauge|histogram|summary")
    name, kind = line
    if kind == "histogram":
        histograms.add(name)
        allowed.update(name + s for s in ("_bucket", "_sum", "_count"))
    elif kind == "summary":
        allowed.update((name, name + "_sum", name + "_count"))
    else:
        allowed.add(name)

# ---- metric names of a PromQL expression
KEYWORDS = {
    # aggregation operators (also caught as calls when followed by "(")
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
    # modifiers, set and binary operators, literals
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "atan2", "offset", "start", "end", "inf", "nan",
}
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
IDENT = re.compile(r'(?<![\w:.$])([A-Za-z_:][\w:]*)')

def metric_names(expr):
    s = STRING.sub('""', expr)                         # string literals (label values, regexes)
    if re.search(r'__name__', s):
        raise ValueError("selects metrics by __name__; name the metric instead")
    s = re.sub(r'\{[^{}]*\}', ' ', s)                  # label matchers
    s = re.sub(r'\[[^\[\]]*\]', ' ', s)                # range and subquery durations
    s = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)', r'\1 ', s)  # label lists
    names = set()
    for m in IDENT.finditer(s):
        name = m.group(1)
        if re.match(r'\s*\(', s[m.end():]):            # function call or aggregation
            continue
        if name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names

def check_names(where, expr, need_metric=True):
    try:
        names = metric_names(expr)
    except ValueError as e:
        failures.append(f"{where}: {e}: {expr}")
        return
    if need_metric and not names:
        failures.append(f"{where}: expression references no metric: {expr}")
    for name in sorted(names):
        if name in histograms:
            failures.append(f"{where}: {name} is a histogram; use {name}_bucket, _sum or _count: {expr}")
        elif name not in allowed:
            failures.append(f"{where}: unknown metric {name!r} (not in grafana/metrics.txt): {expr}")

# ---- dashboards
def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))

dash_queries = []   # (dashboard file, uid, panel title, refId, expr)
uids = {}
files = sorted(glob.glob(os.path.join(here, "dashboards", "*.json")))
if not files:
    failures.append("grafana/dashboards: no dashboard JSON files")
for path in files:
    fname = os.path.basename(path)
    try:
        dash = json.load(open(path))
    except json.JSONDecodeError as e:
        failures.append(f"{fname}: not valid JSON: {e}")
        continue
    uid = dash.get("uid")
    if not uid:
        failures.append(f"{fname}: no uid")
    elif uid in uids:
        failures.append(f"{fname}: uid {uid!r} also used by {uids[uid]}")
    uids[uid] = fname
    if not isinstance(dash.get("schemaVersion"), int):
        failures.append(f"{fname}: no schemaVersion")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        failures.append(f"{fname}: needs a 'datasource' variable of type datasource, query prometheus")
    if "instance" not in variables:
        failures.append(f"{fname}: needs an 'instance' variable")
    for name, v in variables.items():
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r'\s*label_values\((.*),\s*\w+\s*\)\s*', q)
        check_names(f"{fname}: variable ${name}", m.group(1) if m else q)
    seen_ids = {}
    for p in all_panels(dash.get("panels", [])):
        title = p.get("title", "(untitled)")
        where = f"{fname}: panel {title!r}"
        pid = p.get("id")
        if pid is None:
            failures.append(f"{where}: no id")
        elif pid in seen_ids:
            failures.append(f"{where}: id {pid} also used by panel {seen_ids[pid]!r}")
        else:
            seen_ids[pid] = title
        if "gridPos" not in p:
            failures.append(f"{where}: no gridPos")
        if p.get("type") == "row":
            continue
        targets = p.get("targets") or []
        if not targets:
            failures.append(f"{where}: no targets")
        for t in targets:
            ref = t.get("refId", "?")
            tds = (t.get("datasource") or p.get("datasource") or {}).get("uid")
            if tds != "${datasource}":
                failures.append(f"{where} target {ref}: datasource uid is {tds!r}, expected '${{datasource}}'")
            expr = t.get("expr", "")
            if not expr.strip():
                failures.append(f"{where} target {ref}: empty expr")
                continue
            check_names(f"{where} target {ref}", expr)
            dash_queries.append((fname, uid, title, ref, expr, set(variables)))

# ---- alert rules
rules = []
try:
    doc = yaml.safe_load(open(os.path.join(here, "alerts", "sluice-alerts.yml")))
    for g in doc.get("groups", []):
        for r in g.get("rules", []):
            name = r.get("alert") or r.get("record")
            where = f"sluice-alerts.yml: rule {name}"
            check_names(where, r.get("expr", ""))
            if "alert" in r:
                if "for" not in r:
                    failures.append(f"{where}: no 'for:'")
                if "severity" not in (r.get("labels") or {}):
                    failures.append(f"{where}: no severity label")
                for a in ("summary", "description"):
                    if a not in (r.get("annotations") or {}):
                        failures.append(f"{where}: no {a} annotation")
            rules.append((name, r.get("expr", "")))
except (OSError, yaml.YAMLError) as e:
    failures.append(f"sluice-alerts.yml: {e}")

for prov in ("datasources/sluice.yml", "dashboards/sluice.yml"):
    try:
        yaml.safe_load(open(os.path.join(here, "provisioning", prov)))
    except (OSError, yaml.YAMLError) as e:
        failures.append(f"provisioning/{prov}: {e}")

n_static = len(dash_queries)
print(f"{len(files)} dashboards, {n_static} panel queries, {len(rules)} rules: metric names checked against grafana/metrics.txt")

# ---- live evaluation
def query(expr):
    body = urllib.parse.urlencode({"query": expr}).encode()
    req = urllib.request.Request(prom + "/api/v1/query", data=body,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            out = json.load(resp)
    except urllib.error.HTTPError as e:     # Prometheus answers 400/422 with a JSON error body
        try:
            out = json.load(e)
        except ValueError:
            return None, f"HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        sys.exit(f"check.sh: cannot query {prom}/api/v1/query: {e}")
    if out.get("status") != "success":
        return None, f"{out.get('errorType', '?')}: {out.get('error', out)}"
    data = out["data"]
    n = len(data["result"]) if data["resultType"] in ("vector", "matrix") else 1
    return n, None

BUILTIN = {"__rate_interval": rate_interval, "__interval": "15s", "__range": "1h"}
def substitute(expr, variables):
    def repl(m):
        name = m.group(1) or m.group(2)
        if name in BUILTIN:
            return BUILTIN[name]
        if name in variables:
            return ".*"
        raise KeyError(name)
    return re.sub(r'\$\{(\w+)(?::\w+)?\}|\$(\w+)', repl, expr)

if prom:
    panel_series = {}
    for fname, uid, title, ref, expr, variables in dash_queries:
        where = f"{fname}: panel {title!r} target {ref}"
        try:
            q = substitute(expr, variables)
        except KeyError as e:
            failures.append(f"{where}: unknown variable ${e.args[0]} in: {expr}")
            continue
        n, err = query(q)
        if err:
            failures.append(f"{where}: Prometheus rejected the query: {err}\n    query: {q}")
            continue
        key = (fname, uid, title)
        panel_series[key] = panel_series.get(key, 0) + n
        if n == 0:
            warnings.append(f"{where}: no series for: {q}")
    for name, expr in rules:
        n, err = query(expr)
        if err:
            failures.append(f"sluice-alerts.yml: rule {name}: Prometheus rejected the expression: {err}")
    if require_data:
        for (fname, uid, title), n in panel_series.items():
            if uid in DATA_REQUIRED and n == 0:
                failures.append(f"{fname}: panel {title!r} returns no series")
    print(f"evaluated {len(dash_queries)} panel queries and {len(rules)} rules on {prom}")
    for w in warnings:
        print("note:", w)

if failures:
    print(f"\n{len(failures)} failure(s):", file=sys.stderr)
    for f in failures:
        print("FAIL", f, file=sys.stderr)
    sys.exit(1)
print("OK")
PY
