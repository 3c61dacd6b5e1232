//! The RFC 2136 provider against a real BIND (scripts/services/bind.sh):
//! the conformance suite, TSIG refusals, compare-and-swap.

mod common;

use std::time::Duration;

use dr_core::conformance;
use dr_core::dns::{
    Change, DnsProvider, DnsProviderExt, Expect, RecordSet, RecordType, WaitOptions,
};
use dr_core::Error;
use dr_dns::{Rfc2136, Rfc2136Builder, Rfc2136Config, TsigKey};
use secrecy::SecretString;

struct Bind {
    server: String,
    zone: String,
    key_name: String,
    key_file: String,
}

fn bind(test: &str) -> Option<Bind> {
    Some(Bind {
        server: common::server_env("DR_TEST_BIND_SERVER", test)?,
        zone: common::server_env("DR_TEST_BIND_ZONE", test)?,
        key_name: common::server_env("DR_TEST_BIND_KEY_NAME", test)?,
        key_file: common::server_env("DR_TEST_BIND_KEY_FILE", test)?,
    })
}

fn signed(b: &Bind) -> Rfc2136 {
    let mut c = Rfc2136Config::new(&b.server, &b.zone);
    c.key_name = Some(b.key_name.clone());
    c.secret_file = Some(b.key_file.clone().into());
    Rfc2136Builder::new(c).build().expect("provider builds")
}

fn wait() -> WaitOptions {
    WaitOptions::new(Duration::from_millis(100), Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread")]
async fn bind_conforms() {
    let Some(b) = bind("bind_conforms") else {
        return;
    };
    let p = signed(&b);
    let base = format!("{}.{}", common::unique("c"), b.zone);
    conformance::dns::all(&p, &base, &wait()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn compare_and_swap_fails_on_an_unexpected_value() {
    let Some(b) = bind("compare_and_swap_fails_on_an_unexpected_value") else {
        return;
    };
    let p = signed(&b);
    let name = format!("cas.{}.{}", common::unique("t"), b.zone);
    let v1 = RecordSet::new(&name, RecordType::A, 60, ["192.0.2.1"]);
    p.apply_one(Change::create(v1.clone())).await.unwrap();
    // Someone else changes the record behind our back.
    let theirs = RecordSet::new(&name, RecordType::A, 60, ["192.0.2.66"]);
    p.apply_one(Change::upsert(theirs.clone())).await.unwrap();
    let ours = RecordSet::new(&name, RecordType::A, 60, ["192.0.2.2"]);
    let e = p
        .apply_one(Change::upsert(ours).expecting(Expect::Current(v1)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
    assert!(
        e.to_string().contains("prerequisite"),
        "the server's refusal is named: {e}"
    );
    let now = p.get(&theirs.key()).await.unwrap().unwrap();
    assert_eq!(now.values, vec!["192.0.2.66"], "their change is kept");
    p.apply_one(Change::delete(theirs)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_update_is_refused_with_a_clear_error() {
    let Some(b) = bind("unsigned_update_is_refused_with_a_clear_error") else {
        return;
    };
    let p = Rfc2136Builder::new(Rfc2136Config::new(&b.server, &b.zone))
        .build()
        .unwrap();
    let name = format!("unsigned.{}.{}", common::unique("t"), b.zone);
    let r = RecordSet::new(&name, RecordType::A, 60, ["192.0.2.1"]);
    let e = p.apply_one(Change::create(r.clone())).await.unwrap_err();
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
    assert!(e.to_string().contains("unsigned"), "{e}");
    assert_eq!(
        signed(&b).get(&r.key()).await.unwrap(),
        None,
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrongly_signed_update_is_refused_with_a_clear_error() {
    let Some(b) = bind("wrongly_signed_update_is_refused_with_a_clear_error") else {
        return;
    };
    let wrong_secret = "c29tZXRoaW5nIGVsc2UgZW50aXJlbHkgYW5kIGxvbmcgZW5vdWdo";
    let p = Rfc2136Builder::new(Rfc2136Config::new(&b.server, &b.zone))
        .key(TsigKey {
            name: b.key_name.clone(),
            algorithm: "hmac-sha256".into(),
            secret: SecretString::from(wrong_secret),
        })
        .build()
        .unwrap();
    let name = format!("badsig.{}.{}", common::unique("t"), b.zone);
    let r = RecordSet::new(&name, RecordType::A, 60, ["192.0.2.1"]);
    let e = p.apply_one(Change::create(r.clone())).await.unwrap_err();
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
    assert!(
        !format!("{e:?}").contains(wrong_secret),
        "the secret is not in the error"
    );
    assert!(e.to_string().contains("TSIG signature"), "{e}");
    // An unknown key name: BADKEY.
    let p = Rfc2136Builder::new(Rfc2136Config::new(&b.server, &b.zone))
        .key(TsigKey {
            name: "no-such-key".into(),
            algorithm: "hmac-sha256".into(),
            secret: SecretString::from(wrong_secret),
        })
        .build()
        .unwrap();
    let e = p.apply_one(Change::create(r.clone())).await.unwrap_err();
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
    assert_eq!(
        signed(&b).get(&r.key()).await.unwrap(),
        None,
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zone_the_server_does_not_serve_is_named() {
    let Some(b) = bind("a_zone_the_server_does_not_serve_is_named") else {
        return;
    };
    let mut c = Rfc2136Config::new(&b.server, "not-served.test.");
    c.key_name = Some(b.key_name.clone());
    c.secret_file = Some(b.key_file.clone().into());
    let p = Rfc2136Builder::new(c).build().unwrap();
    let e = p
        .get(&dr_core::dns::RecordKey::new("a.not-served.test.", RecordType::A).unwrap())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not-served.test."), "{e}");
}
