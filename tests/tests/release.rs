//! The release tarball's bill of materials (`cargo xtask dist`,
//! `INFERSCOPE_SBOM`): valid by CycloneDX's own schema validator, and naming
//! what the binary is built from, not what only builds or tests it.

use std::{collections::BTreeMap, path::PathBuf, process::Command};

use inferscope_tests::venv_python;
use serde_json::Value;

#[test]
fn the_bill_of_materials_is_valid_cyclonedx_and_lists_what_the_binary_is_built_from() {
    let sbom = std::env::var_os("INFERSCOPE_SBOM")
        .map(PathBuf::from)
        .expect("INFERSCOPE_SBOM names the bill of materials: run `cargo xtask test`, which builds it");
    let validate = "import sys\n\
                    from cyclonedx.schema import SchemaVersion\n\
                    from cyclonedx.validation.json import JsonStrictValidator\n\
                    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\n\
                    sys.exit(str(errors) if errors else 0)";
    let out = Command::new(venv_python())
        .args(["-c", validate])
        .arg(&sbom)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "not valid CycloneDX 1.6: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bom: Value = serde_json::from_slice(&std::fs::read(&sbom).unwrap()).unwrap();
    assert_eq!(bom["metadata"]["component"]["name"], "inferscope");
    let components: BTreeMap<&str, &Value> = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c))
        .collect();
    // Linked in: the loader, the runtime, TLS, export.
    for linked in ["aya", "tokio", "ring", "opentelemetry_sdk", "inferscope-shared"] {
        assert!(components.contains_key(linked), "{linked} missing");
    }
    // Only a build script's (cc, for ring) or the tests' (proptest): not in the binary.
    for absent in ["cc", "proptest"] {
        assert!(!components.contains_key(absent), "{absent} is not in the binary");
    }
    // A procedural macro runs in the compiler: listed, marked as not shipped.
    assert_eq!(components["clap_derive"]["scope"], "excluded");
    for (name, c) in &components {
        assert!(c["licenses"].is_array(), "{name} has no license");
        let from_crates_io = *name != "inferscope-shared";
        assert_eq!(
            c["hashes"].is_array(),
            from_crates_io,
            "{name}: Cargo.lock's checksum"
        );
    }
}
