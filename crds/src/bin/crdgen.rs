//! Writes the ModelDeployment CRD into `crds/yaml/` and the Helm chart.
//!
//! `crdgen` writes both files (run it from the workspace root); `crdgen --print` prints the
//! YAML instead.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let yaml = modelship_crds::crd_yaml();
    if std::env::args().any(|arg| arg == "--print") {
        print!("{yaml}");
        return Ok(());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for relative in [modelship_crds::CRD_PATH, modelship_crds::CHART_CRD_PATH] {
        let path = root.join(relative);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, &yaml)?;
        println!("wrote {relative}");
    }
    Ok(())
}
