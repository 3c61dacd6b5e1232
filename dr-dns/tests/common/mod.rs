//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

/// The value of `var`, or `None` after saying why the test is skipped; with
/// `DR_REQUIRE_SERVERS` set a missing server fails the test instead.
pub fn server_env(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            if std::env::var_os("DR_REQUIRE_SERVERS").is_some() {
                panic!("{test}: {var} is not set and DR_REQUIRE_SERVERS is (start the servers with scripts/test.sh)");
            }
            eprintln!("skipping {test}: {var} is not set (scripts/test.sh starts the server)");
            None
        }
    }
}

/// A label unique to this test run.
pub fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}{:x}{:x}", n % 0xffff_ffff, std::process::id())
}

/// A Route53 client for the emulator at `AWS_ENDPOINT_URL`, to set up zones.
pub async fn moto_admin() -> aws_sdk_route53::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_config::defaults(aws_sdk_route53::config::BehaviorVersion::latest())
        .http_client(http)
        .load()
        .await;
    aws_sdk_route53::Client::new(&conf)
}

/// Creates a hosted zone of its own in moto; returns its id and name.
pub async fn moto_zone(label: &str) -> (String, String) {
    let name = format!("{}.moto.test.", unique(label));
    let out = moto_admin()
        .await
        .create_hosted_zone()
        .name(&name)
        .caller_reference(unique("ref"))
        .send()
        .await
        .expect("moto creates a hosted zone");
    let id = out
        .hosted_zone()
        .unwrap()
        .id()
        .trim_start_matches("/hostedzone/")
        .to_string();
    (id, name)
}
