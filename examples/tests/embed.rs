//! The embedding example runs end to end against a real PostgreSQL.

use std::process::Command;

#[test]
fn the_embedding_example_runs_backup_verify_prune_status() {
    if !dr_postgres::testing::should_run() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_dr-embed"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.matches("backup ").count() >= 3, "{stdout}");
    assert!(stdout.contains("verify: backup"), "{stdout}");
    assert!(
        stdout.contains("restored into a scratch target"),
        "{stdout}"
    );
    assert!(stdout.contains("prune: pruned 1 backup(s)"), "{stdout}");
    assert!(
        stdout.contains("status: shop has 2 backup(s), RPO met"),
        "{stdout}"
    );
    assert!(stdout.contains("Restored ok=true"), "{stdout}");
}
