"""Renders the Helm chart with a real Helm (helm-python-sdk: Helm v4's Go code,
no helm binary), lints it strictly, checks that the default rendering is the
plain manifest object for object, and writes the renderings for the schema
check.  usage: check_chart.py CHART PLAIN_MANIFEST OUT_DIR"""
import json
import sys
from pathlib import Path

import yaml
from helm_python import chart as helm

chart_dir, plain_file, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
chart = helm.Chart.load(chart_dir)


def render(values=None):
    manifests = chart.render(values, name="inferscope", namespace="monitoring", is_install=True)
    return [doc for path in sorted(manifests) for doc in yaml.safe_load_all(manifests[path]) if doc]


def key(doc):
    return doc["kind"], doc["metadata"]["name"]


failures = []
report = helm.lint(chart_dir, strict=True)
# Severity 1 is informational ("icon is recommended").
failures += [f"lint: {m}" for m in report["messages"] if m["severity"] > 1] + report["errors"]

rendered = {key(d): d for d in render()}
plain = {key(d): d for d in yaml.safe_load_all(Path(plain_file).read_text()) if d}
for k in sorted(set(rendered) | set(plain)):
    if rendered.get(k) != plain.get(k):
        failures.append(
            f"{k}: the chart renders\n{json.dumps(rendered.get(k), sort_keys=True)}\n"
            f"the plain manifest has\n{json.dumps(plain.get(k), sort_keys=True)}"
        )

# Every optional part on, for the schema check.
everything = render({
    "serviceMonitor": {"enabled": True},
    "otlp": {"endpoint": "http://otel-collector.monitoring:4317", "protocol": "grpc"},
    "extraEnv": [{"name": "OTEL_METRIC_EXPORT_INTERVAL", "value": "15000"}],
    "profiling": {
        "enabled": True,
        "every": "30s",
        "pyroscope": {
            "url": "http://pyroscope.monitoring:4040",
            "tenantId": "team-a",
            "basicAuthSecret": "pyroscope-credentials",
        },
    },
})
kinds = sorted(k for k, _ in map(key, everything))
if "ServiceMonitor" not in kinds:
    failures.append(f"serviceMonitor.enabled renders no ServiceMonitor: {kinds}")
env = next(d for d in everything if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["env"]
names = [e["name"] for e in env]
for want in [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "PYROSCOPE_TENANT_ID",
    "PYROSCOPE_BASIC_AUTH_USER",
    "PYROSCOPE_BASIC_AUTH_PASSWORD",
]:
    if want not in names:
        failures.append(f"{want} missing from the rendered env: {names}")
args = next(d for d in everything if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["args"]
profiling = ["--profile", "--profile-every", "30s", "--profile-frequency", "49", "--gpu-call-stacks", "64",
             "--pyroscope-url", "http://pyroscope.monitoring:4040"]
if args[-len(profiling):] != profiling:
    failures.append(f"profiling.enabled renders the arguments {args}")
if "OTEL_PROFILES_EXPORTER" in names:
    failures.append("profiling.otlp (the default) keeps profiles off OTLP")
# Profiles over OTLP alone: no Pyroscope argument; profiling.otlp false keeps them off OTLP.
otlp_only = {"otlp": {"endpoint": "http://otel-collector.monitoring:4317"}, "profiling": {"enabled": True}}
container = next(d for d in render(otlp_only) if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
if "--profile" not in container["args"] or "--pyroscope-url" in container["args"]:
    failures.append(f"profiling over OTLP alone renders the arguments {container['args']}")
off = {"name": "OTEL_PROFILES_EXPORTER", "value": "none"}
pyroscope_only = {"profiling": {"enabled": True, "otlp": False, "pyroscope": {"url": "http://pyroscope:4040"}}}
container = next(d for d in render(pyroscope_only) if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
if off not in container["env"]:
    failures.append(f"profiling.otlp false leaves profiles on OTLP: {container['env']}")
for nowhere in [{"profiling": {"enabled": True}}, {**otlp_only, "profiling": {"enabled": True, "otlp": False}}]:
    try:
        render(nowhere)
        failures.append(f"profiling with nowhere to ship to renders: {nowhere}")
    except Exception as e:
        if "profiling.enabled needs somewhere to ship to" not in str(e):
            failures.append(f"profiling with nowhere to ship to fails otherwise: {e}")
out.mkdir(parents=True, exist_ok=True)
(out / "everything.yaml").write_text(yaml.safe_dump_all(everything))

print("\n".join(failures) if failures else f"chart: {len(rendered)} objects, equal to {plain_file}")
sys.exit(1 if failures else 0)
