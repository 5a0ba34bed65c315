"""ops/: the Prometheus alert rules, their unit tests, the example scrape config and the Grafana dashboard.

- `promtool check rules` and `promtool test rules` (every alert fires on the series that should raise
  it, and not on healthy ones); `promtool check config` of ops/prometheus/prometheus.yml (its token file
  pointed at a temporary one);
- the dashboard is JSON Grafana imports (unique panel ids, a datasource variable, every panel a query),
  and every PromQL expression in it parses (checked by promtool as recording rules);
- every metric the rules and the dashboard name is one a daemon exports (the names in the sources of
  coconut-clearingd, coconut-hsmd and coconut::metrics), so a renamed metric cannot leave a silent alert.

Usage: test_ops.py SOURCE_DIR
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

EXPORTERS = ["clearing/daemon/src/api/operations.cpp", "hsm-stub/src/metrics.cpp", "hsm-stub/src/status_http.cpp", "core/src/metrics.cpp"]
# Series Prometheus makes itself, or other exporters: not ours to check.
FOREIGN = {"up", "node_filesystem_avail_bytes"}
PROMQL_WORDS = {"sum", "by", "rate", "increase", "max", "min", "count", "on", "unless", "and", "or", "group_right", "group_left",
                "histogram_quantile", "predict_linear", "le", "without", "ignoring", "offset", "bool", "job", "instance", "code",
                "mti", "kind", "outcome", "event", "ledger", "class", "mountpoint"}


def promtool(*argv, cwd=None):
    tool = shutil.which("promtool")
    assert tool, "promtool not found: tools/setup.sh installs it (Debian package prometheus)"
    result = subprocess.run([tool, *argv], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert result.returncode == 0, f"promtool {' '.join(argv)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def exported(source):
    names = set()
    for path in EXPORTERS:
        names |= set(re.findall(r'"((?:coconut|process)_[a-z0-9_]+)"', open(os.path.join(source, path)).read()))
    return names


def metric_names(expr):
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    return {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges) if w not in PROMQL_WORDS and not w.startswith("__")}


def check_known(exprs, known, where):
    for expr in exprs:
        for name in metric_names(expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in FOREIGN or name in known or base in known, f"{where}: {name} is exported by no daemon ({expr})"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    source = os.path.abspath(sys.argv[1])
    prom = os.path.join(source, "ops", "prometheus")
    known = exported(source)
    assert "coconut_iso_responses_total" in known and "coconut_hsm_requests_total" in known and "process_open_fds" in known, known

    out = promtool("check", "rules", "coconut-alerts.yml", cwd=prom)
    rules = [r for g in yaml.safe_load(open(os.path.join(prom, "coconut-alerts.yml")))["groups"] for r in g["rules"]]
    alerts = {r["alert"] for r in rules}
    for needed in ("CoconutClearingDown", "CoconutHsmDown", "CoconutHsmErrors", "CoconutSuspenseGrowing", "CoconutDeclinesSpike",
                   "CoconutStandbyLag", "CoconutDiskFillingUp", "CoconutClearingDegraded"):
        assert needed in alerts, needed
    check_known([r["expr"] for r in rules], known, "coconut-alerts.yml")
    print(f"  ok  promtool check rules: {out.strip().splitlines()[-1].strip()}; every metric named is exported", flush=True)

    promtool("test", "rules", "coconut-alerts.test.yml", cwd=prom)
    tested = {case["alertname"] for t in yaml.safe_load(open(os.path.join(prom, "coconut-alerts.test.yml")))["tests"]
              for case in t["alert_rule_test"]}
    print(f"  ok  promtool test rules: {len(tested)} alerts fire on their series and stay quiet on healthy ones", flush=True)

    with tempfile.TemporaryDirectory(prefix="coconut-ops-") as work:
        token = os.path.join(work, "token")
        with open(token, "w") as f:
            f.write("clerk_test\n")
        config = open(os.path.join(prom, "prometheus.yml")).read().replace("/etc/prometheus/coconut-clearing.token", token)
        with open(os.path.join(work, "prometheus.yml"), "w") as f:
            f.write(config)
        shutil.copy(os.path.join(prom, "coconut-alerts.yml"), work)
        promtool("check", "config", "prometheus.yml", cwd=work)
        print("  ok  promtool check config ops/prometheus/prometheus.yml", flush=True)

        dashboard = json.load(open(os.path.join(source, "ops", "grafana", "coconut-dashboard.json")))
        panels = dashboard["panels"]
        assert dashboard["uid"] and dashboard["title"] and len(panels) >= 10, dashboard.keys()
        assert len({p["id"] for p in panels}) == len(panels), "panel ids are unique"
        assert any(v["type"] == "datasource" for v in dashboard["templating"]["list"])
        exprs = [t["expr"] for p in panels for t in p["targets"]]
        assert all(p["targets"] for p in panels) and exprs
        check_known(exprs, known, "coconut-dashboard.json")
        recording = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:expr{i}", "expr": e} for i, e in enumerate(exprs)]}]}
        with open(os.path.join(work, "dashboard-rules.yml"), "w") as f:
            yaml.safe_dump(recording, f)
        promtool("check", "rules", "dashboard-rules.yml", cwd=work)
        print(f"  ok  grafana dashboard: {len(panels)} panels, {len(exprs)} PromQL expressions that parse, every metric exported", flush=True)
    print("PASS")


if __name__ == "__main__":
    main()
