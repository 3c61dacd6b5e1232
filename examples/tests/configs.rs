//! Every example configuration in the repository parses, with the runbook's
//! policies expressed in it.

use std::path::Path;
use std::time::Duration;

use dr_ops::{DrConfig, SourceConfig};

#[test]
fn example_dr_toml_parses_with_the_runbook_policies() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dr.toml");
    let config = DrConfig::load(&path).unwrap();
    assert_eq!(
        config.repository.url.as_deref(),
        Some("s3://platform-backups/prod")
    );
    let base = &config.sources["app-db-base"];
    assert!(matches!(base.config, SourceConfig::PostgresPhysical(_)));
    assert_eq!(
        base.retention.pitr_window,
        Some(Duration::from_secs(7 * 86400))
    );
    assert_eq!(base.retention.keep_weekly, Some(13));
    assert_eq!(base.schedule.as_deref(), Some("0 */6 * * *"));
    let vault = &config.sources["vault"];
    assert!(matches!(vault.config, SourceConfig::VaultRaft(_)));
    assert_eq!(
        vault.retention.keep_within,
        Some(Duration::from_secs(30 * 86400))
    );
    assert_eq!(vault.schedule.as_deref(), Some("0 */4 * * *"));
    let cluster = &config.sources["cluster"];
    assert!(matches!(cluster.config, SourceConfig::Kubernetes(_)));
    assert_eq!(
        cluster.retention.keep_within,
        Some(Duration::from_secs(720 * 3600))
    );
    assert!(matches!(
        config.sources["etcd"].config,
        SourceConfig::Etcd(_)
    ));
    assert_eq!(
        config.objectives.for_source("app-db-base").rpo,
        Duration::from_secs(60)
    );
    assert_eq!(
        config.objectives.for_source("vault").rpo,
        Duration::from_secs(900)
    );
    assert!(config.dns.is_some());
}

#[test]
fn example_plans_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        dr_core::plan::PlanSpec::from_toml(&text)
            .unwrap_or_else(|e| panic!("{}: {e:?}", p.display()));
        n += 1;
    }
    assert_eq!(n, 4);
}
