//! `dr check` for a Vault (or OpenBao) raft source: the server reachable,
//! initialized and unsealed, and the token allowed to take raft snapshots
//! (`read` on `sys/storage/raft/snapshot`, asked with
//! `POST sys/capabilities-self`, <https://openbao.org/api-docs/system/capabilities-self/>).

use dr_core::setup_check::Finding;

use crate::client::VaultClient;
use crate::config::VaultConfig;

/// The API path a raft snapshot is read from.
const SNAPSHOT_PATH: &str = "sys/storage/raft/snapshot";

/// Checks source `name` of `config`. Never fails: what cannot be checked is
/// a finding too.
pub async fn check_vault(config: &VaultConfig, name: &str) -> Vec<Finding> {
    let subject = format!("source {name}");
    let mut out = Vec::new();
    let client = match VaultClient::new(config) {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::fail(
                &subject,
                "settings",
                dr_core::error_chain(&e),
                "fix the source's Vault settings",
            ));
            return out;
        }
    };
    let address = client.address_str().to_string();
    match client.health().await {
        Err(e) => {
            out.push(Finding::fail(
                &subject,
                "reachable",
                format!("{address}: {}", dr_core::error_chain(&e)),
                "check the address (VAULT_ADDR), TLS settings and that the server runs",
            ));
            return out;
        }
        Ok(h) if !h.initialized || h.sealed => {
            out.push(Finding::fail(
                &subject,
                "reachable",
                format!(
                    "{address} is {}",
                    if h.initialized {
                        "sealed"
                    } else {
                        "not initialized"
                    }
                ),
                "unseal the cluster (or initialize it) before backups can run",
            ));
            return out;
        }
        Ok(h) => out.push(Finding::ok(
            &subject,
            "reachable",
            format!(
                "{address}: {} {}",
                if h.standby { "standby" } else { "active" },
                h.version.unwrap_or_default()
            ),
        )),
    }
    let asked = client
        .post_json(
            "sys/capabilities-self",
            &serde_json::json!({ "paths": [SNAPSHOT_PATH] }),
        )
        .await;
    out.push(match asked {
        Err(e) => Finding::fail(
            &subject,
            "snapshot permission",
            format!("the token cannot be checked: {}", dr_core::error_chain(&e)),
            "give dr a valid token (or auth method) for this cluster",
        ),
        Ok(body) => {
            let caps: Vec<String> = body
                .get(SNAPSHOT_PATH)
                .or_else(|| body.get("capabilities"))
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            if caps.iter().any(|c| c == "read" || c == "root" || c == "sudo") {
                Finding::ok(&subject, "snapshot permission", format!("the token may read {SNAPSHOT_PATH} ({})", caps.join(", ")))
            } else {
                Finding::fail(
                    &subject,
                    "snapshot permission",
                    format!("the token's capabilities on {SNAPSHOT_PATH} are [{}]: snapshots will be refused", caps.join(", ")),
                    format!("attach a policy with path \"{SNAPSHOT_PATH}\" {{ capabilities = [\"read\"] }}"),
                )
            }
        }
    });
    out
}
