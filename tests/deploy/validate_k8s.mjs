// Validates Kubernetes manifests against the API's OpenAPI schemas
// (kubernetes-models; ServiceMonitor from its prometheus-operator package).
// usage: node validate_k8s.mjs FILE...   exit 1 if any object is invalid.
// An ES module (the operator's models are import-only), run from beside the
// node_modules it imports (tests/tests/deploy.rs copies it there).
import fs from 'node:fs';
import * as yaml from 'js-yaml';

let invalid = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(fs.readFileSync(file, 'utf8'))) {
    if (!doc) continue;
    const [group, version] = doc.apiVersion.includes('/') ? doc.apiVersion.split('/') : [null, doc.apiVersion];
    const module = group === 'monitoring.coreos.com'
      ? `@kubernetes-models/prometheus-operator/${group}/${version}`
      : `kubernetes-models/${group ? `${group}/` : ''}${version}`;
    const Kind = (await import(module))[doc.kind];
    const what = `${file}: ${doc.kind}/${doc.metadata.name}`;
    if (!Kind) {
      invalid++;
      console.log(`unknown kind ${what}`);
      continue;
    }
    try {
      new Kind(doc).validate();
      console.log(`valid ${what}`);
    } catch (e) {
      invalid++;
      console.log(`invalid ${what}: ${e.message}`);
    }
  }
}
process.exit(invalid ? 1 : 0);
