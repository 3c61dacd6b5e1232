//! Every example configuration in the repository parses.

use std::path::Path;

#[test]
fn example_dr_toml_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dr.toml");
    let config = dr_cli::config::DrConfig::load(&path).unwrap();
    assert!(!config.sources.is_empty());
    assert_eq!(
        config.repository.url.as_deref(),
        Some("s3://platform-backups/prod")
    );
}
