//! The contract of [`DnsProvider`] as free functions that every provider
//! runs: the in-memory one on every `cargo test`, Route53 against the
//! emulator, RFC 2136 against BIND.
//!
//! Every check works under `base`, a name of the caller's own (a random label
//! under the test zone, `c1a2b3.dr-test.`), and deletes what it created.

use crate::dns::{
    AliasTarget, Change, ChangeBatch, ChangeInfo, ChangeStatus, DnsProvider, DnsProviderExt,
    Expect, FailoverRole, RecordKey, RecordSet, RecordType, Routing, WaitOptions,
};
use crate::error::{Error, Result};

fn name(base: &str, label: &str) -> String {
    format!("{label}.{}", base.trim_end_matches('.')) + "."
}

async fn cleanup(provider: &dyn DnsProvider, records: &[RecordSet]) {
    for r in records {
        if let Ok(Some(cur)) = provider.get(&r.key()).await {
            let _ = provider
                .apply(&ChangeBatch::new(vec![Change::delete(cur)]))
                .await;
        }
    }
}

fn assert_conflict(r: Result<ChangeInfo>, rule: &str) {
    match r {
        Err(Error::Conflict { .. }) => {}
        other => panic!("{rule}: expected a Conflict, got {other:?}"),
    }
}

/// Runs every check that the provider's capabilities allow.
///
/// # Panics
/// On the first broken rule, naming it.
pub async fn all(provider: &dyn DnsProvider, base: &str, wait: &WaitOptions) {
    let caps = provider.capabilities();
    missing_record_is_none(provider, base).await;
    invalid_input_is_rejected_before_anything_changes(provider, base).await;
    create_then_get(provider, base, wait).await;
    create_of_existing_conflicts(provider, base).await;
    upsert_replaces(provider, base).await;
    expect_current_guards_upsert(provider, base).await;
    expect_absent_guards_upsert(provider, base).await;
    delete_must_match(provider, base).await;
    record_types_round_trip(provider, base).await;
    failed_batch_changes_nothing(provider, base).await;
    if caps.weighted {
        weighted_sets_are_distinct(provider, base).await;
    } else {
        unsupported_routing_is_refused(provider, base).await;
    }
    if caps.failover {
        failover_sets_round_trip(provider, base).await;
    }
    if caps.authoritative_query {
        authoritative_answer_follows_change(provider, base, wait).await;
    }
}

/// A record set that does not exist reads as `None`, not an error.
pub async fn missing_record_is_none(provider: &dyn DnsProvider, base: &str) {
    let key = RecordKey::new(&name(base, "missing"), RecordType::A).unwrap();
    let got = provider
        .get(&key)
        .await
        .expect("get of a missing record succeeds");
    assert_eq!(got, None, "a missing record set reads as None");
}

/// Bad names, values and empty batches are `InvalidConfig`, and the
/// provider's state is unchanged.
pub async fn invalid_input_is_rejected_before_anything_changes(
    provider: &dyn DnsProvider,
    base: &str,
) {
    let good = RecordSet::new(&name(base, "inv-good"), RecordType::A, 60, ["192.0.2.1"]);
    let bad_value = RecordSet::new(
        &name(base, "inv-bad"),
        RecordType::A,
        60,
        ["not-an-address"],
    );
    let r = provider
        .apply(&ChangeBatch::new(vec![
            Change::create(good.clone()),
            Change::create(bad_value),
        ]))
        .await;
    assert!(
        matches!(r, Err(Error::InvalidConfig { .. })),
        "an invalid A value is InvalidConfig, got {r:?}"
    );
    assert_eq!(
        provider.get(&good.key()).await.unwrap(),
        None,
        "nothing applied"
    );
    let bad_name = RecordSet::new("bad name.example.", RecordType::A, 60, ["192.0.2.1"]);
    let r = provider
        .apply(&ChangeBatch::new(vec![Change::create(bad_name)]))
        .await;
    assert!(
        matches!(r, Err(Error::InvalidConfig { .. })),
        "a bad name is InvalidConfig, got {r:?}"
    );
    let r = provider.apply(&ChangeBatch::default()).await;
    assert!(
        matches!(r, Err(Error::InvalidConfig { .. })),
        "an empty batch is InvalidConfig, got {r:?}"
    );
}

/// A created record set reads back with its TTL and values; its change
/// reaches `INSYNC` within the bound.
pub async fn create_then_get(provider: &dyn DnsProvider, base: &str, wait: &WaitOptions) {
    let r = RecordSet::new(
        &name(base, "create"),
        RecordType::A,
        300,
        ["192.0.2.10", "192.0.2.11"],
    );
    let info = provider
        .apply(&ChangeBatch::new(vec![Change::create(r.clone())]))
        .await
        .expect("create");
    assert!(!info.id.is_empty(), "a change has an id");
    let synced = provider
        .wait_for_sync(&info, wait)
        .await
        .expect("change reaches INSYNC");
    assert_eq!(synced.status, ChangeStatus::InSync);
    let got = provider
        .get(&r.key())
        .await
        .unwrap()
        .expect("created record reads back");
    assert!(got.same_data(&r), "read back {got:?}, wrote {r:?}");
    assert_eq!(got.ttl, Some(300), "TTL kept");
    cleanup(provider, &[r]).await;
}

/// A `CREATE` of an existing record set is a conflict and leaves it.
pub async fn create_of_existing_conflicts(provider: &dyn DnsProvider, base: &str) {
    let r = RecordSet::new(&name(base, "dup"), RecordType::A, 60, ["192.0.2.20"]);
    provider
        .apply_one(Change::create(r.clone()))
        .await
        .expect("first create");
    let other = RecordSet::new(&r.name, RecordType::A, 60, ["192.0.2.21"]);
    assert_conflict(
        provider.apply_one(Change::create(other)).await,
        "CREATE of an existing set",
    );
    let got = provider.get(&r.key()).await.unwrap().expect("still there");
    assert!(
        got.same_data(&r),
        "a refused CREATE left the record as it was, got {got:?}"
    );
    cleanup(provider, &[r]).await;
}

/// `UPSERT` creates, then replaces values and TTL.
pub async fn upsert_replaces(provider: &dyn DnsProvider, base: &str) {
    let a = RecordSet::new(&name(base, "upsert"), RecordType::A, 60, ["192.0.2.30"]);
    provider
        .apply_one(Change::upsert(a.clone()))
        .await
        .expect("upsert creates");
    let b = RecordSet::new(&a.name, RecordType::A, 120, ["192.0.2.31"]);
    provider
        .apply_one(Change::upsert(b.clone()))
        .await
        .expect("upsert replaces");
    let got = provider.get(&a.key()).await.unwrap().expect("exists");
    assert!(got.same_data(&b), "upsert replaced the values, got {got:?}");
    assert_eq!(got.ttl, Some(120), "upsert replaced the TTL");
    cleanup(provider, &[b]).await;
}

/// An `UPSERT` expecting a value that is not current is a conflict and
/// changes nothing; expecting the current value, it applies.
pub async fn expect_current_guards_upsert(provider: &dyn DnsProvider, base: &str) {
    let cur = RecordSet::new(&name(base, "cas"), RecordType::A, 60, ["192.0.2.40"]);
    provider
        .apply_one(Change::create(cur.clone()))
        .await
        .expect("create");
    let wrong = RecordSet::new(&cur.name, RecordType::A, 60, ["192.0.2.99"]);
    let new = RecordSet::new(&cur.name, RecordType::A, 60, ["192.0.2.41"]);
    assert_conflict(
        provider
            .apply_one(Change::upsert(new.clone()).expecting(Expect::Current(wrong)))
            .await,
        "UPSERT expecting a value that is not current",
    );
    let got = provider.get(&cur.key()).await.unwrap().expect("exists");
    assert!(
        got.same_data(&cur),
        "a refused compare-and-swap changed nothing, got {got:?}"
    );
    provider
        .apply_one(Change::upsert(new.clone()).expecting(Expect::Current(cur.clone())))
        .await
        .expect("compare-and-swap with the current value applies");
    let got = provider.get(&cur.key()).await.unwrap().expect("exists");
    assert!(got.same_data(&new), "compare-and-swap applied, got {got:?}");
    cleanup(provider, &[new]).await;
}

/// An `UPSERT` expecting no record set conflicts when one exists, and
/// applies when none does.
pub async fn expect_absent_guards_upsert(provider: &dyn DnsProvider, base: &str) {
    let r = RecordSet::new(&name(base, "absent"), RecordType::A, 60, ["192.0.2.50"]);
    provider
        .apply_one(Change::upsert(r.clone()).expecting(Expect::Absent))
        .await
        .expect("expecting absence of a missing record applies");
    let again = RecordSet::new(&r.name, RecordType::A, 60, ["192.0.2.51"]);
    assert_conflict(
        provider
            .apply_one(Change::upsert(again).expecting(Expect::Absent))
            .await,
        "UPSERT expecting absence of an existing set",
    );
    let got = provider.get(&r.key()).await.unwrap().expect("exists");
    assert!(got.same_data(&r), "unchanged, got {got:?}");
    cleanup(provider, &[r]).await;
}

/// `DELETE` needs the current values: other values or a missing set are
/// conflicts; the exact set is removed.
pub async fn delete_must_match(provider: &dyn DnsProvider, base: &str) {
    let r = RecordSet::new(&name(base, "del"), RecordType::A, 60, ["192.0.2.60"]);
    provider
        .apply_one(Change::create(r.clone()))
        .await
        .expect("create");
    let other = RecordSet::new(&r.name, RecordType::A, 60, ["192.0.2.61"]);
    assert_conflict(
        provider.apply_one(Change::delete(other)).await,
        "DELETE with other values",
    );
    assert!(
        provider.get(&r.key()).await.unwrap().is_some(),
        "a refused DELETE left the record"
    );
    provider
        .apply_one(Change::delete(r.clone()))
        .await
        .expect("DELETE of the exact set");
    assert_eq!(provider.get(&r.key()).await.unwrap(), None, "deleted");
    assert_conflict(
        provider.apply_one(Change::delete(r)).await,
        "DELETE of a missing set",
    );
}

/// `AAAA`, `CNAME` and `TXT` (with spaces and quotes) read back as written.
pub async fn record_types_round_trip(provider: &dyn DnsProvider, base: &str) {
    let records = vec![
        RecordSet::new(
            &name(base, "v6"),
            RecordType::AAAA,
            60,
            ["2001:db8::1", "2001:DB8:0:0::2"],
        ),
        RecordSet::new(
            &name(base, "alias-name"),
            RecordType::CNAME,
            60,
            ["Target.Example.NET"],
        ),
        RecordSet::new(
            &name(base, "txt"),
            RecordType::TXT,
            60,
            ["v=dr1 region=eu-west-1", "say \"hello\""],
        ),
    ];
    let changes = records.iter().cloned().map(Change::create).collect();
    provider
        .apply(&ChangeBatch::new(changes))
        .await
        .expect("create records of every type");
    for r in &records {
        let want = r.validate().unwrap();
        let got = provider
            .get(&r.key())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{} reads back", r.key()));
        assert!(
            got.same_data(&want),
            "{}: read back {got:?}, wrote {want:?}",
            r.key()
        );
    }
    cleanup(provider, &records).await;
}

/// A batch with one conflicting change applies none of its changes.
pub async fn failed_batch_changes_nothing(provider: &dyn DnsProvider, base: &str) {
    let existing = RecordSet::new(&name(base, "atomic-old"), RecordType::A, 60, ["192.0.2.70"]);
    provider
        .apply_one(Change::create(existing.clone()))
        .await
        .expect("create");
    let fresh = RecordSet::new(&name(base, "atomic-new"), RecordType::A, 60, ["192.0.2.71"]);
    let replaced = RecordSet::new(&existing.name, RecordType::A, 60, ["192.0.2.72"]);
    assert_conflict(
        provider
            .apply(&ChangeBatch::new(vec![
                Change::create(fresh.clone()),
                Change::upsert(replaced.clone()).expecting(Expect::Absent),
            ]))
            .await,
        "a batch whose second change conflicts",
    );
    assert_eq!(
        provider.get(&fresh.key()).await.unwrap(),
        None,
        "the first change was not applied"
    );
    let got = provider
        .get(&existing.key())
        .await
        .unwrap()
        .expect("exists");
    assert!(got.same_data(&existing), "unchanged, got {got:?}");
    cleanup(provider, &[existing, fresh]).await;
}

/// The status of a change that was never submitted is `NotFound`. Not in
/// [`all`]: moto's Route53 answers `INSYNC` for any id, so each provider's
/// tests call it where the server is faithful.
pub async fn unknown_change_is_not_found(provider: &dyn DnsProvider) {
    let r = provider.change_status("CDRNOSUCHCHANGE0").await;
    if provider.capabilities().change_status {
        assert!(
            matches!(r, Err(Error::NotFound { .. })),
            "unknown change id is NotFound, got {r:?}"
        );
    }
}

/// Weighted sets of one name and type are separate record sets, read by
/// set identifier.
pub async fn weighted_sets_are_distinct(provider: &dyn DnsProvider, base: &str) {
    let n = name(base, "weighted");
    let blue =
        RecordSet::new(&n, RecordType::A, 60, ["192.0.2.80"]).with_routing(Routing::Weighted {
            set_identifier: "blue".into(),
            weight: 100,
        });
    let green =
        RecordSet::new(&n, RecordType::A, 60, ["192.0.2.81"]).with_routing(Routing::Weighted {
            set_identifier: "green".into(),
            weight: 0,
        });
    provider
        .apply(&ChangeBatch::new(vec![
            Change::create(blue.clone()),
            Change::create(green.clone()),
        ]))
        .await
        .expect("create two weighted sets");
    for r in [&blue, &green] {
        let got = provider
            .get(&r.key())
            .await
            .unwrap()
            .expect("weighted set reads back");
        assert!(got.same_data(r), "read {got:?}, wrote {r:?}");
    }
    let plain = RecordKey::new(&n, RecordType::A).unwrap();
    assert_eq!(
        provider.get(&plain).await.unwrap(),
        None,
        "no set without identifier"
    );
    cleanup(provider, &[blue, green]).await;
}

/// A provider without weighted sets refuses them as `Unsupported`.
pub async fn unsupported_routing_is_refused(provider: &dyn DnsProvider, base: &str) {
    let r = RecordSet::new(&name(base, "weighted"), RecordType::A, 60, ["192.0.2.82"])
        .with_routing(Routing::Weighted {
            set_identifier: "blue".into(),
            weight: 1,
        });
    let got = provider.apply_one(Change::create(r)).await;
    assert!(
        matches!(got, Err(Error::Unsupported { .. })),
        "weighted set refused, got {got:?}"
    );
}

/// Primary and secondary failover sets round-trip.
pub async fn failover_sets_round_trip(provider: &dyn DnsProvider, base: &str) {
    let n = name(base, "failover");
    let primary =
        RecordSet::new(&n, RecordType::A, 60, ["192.0.2.90"]).with_routing(Routing::Failover {
            set_identifier: "primary".into(),
            role: FailoverRole::Primary,
            health_check_id: None,
        });
    let secondary =
        RecordSet::new(&n, RecordType::A, 60, ["192.0.2.91"]).with_routing(Routing::Failover {
            set_identifier: "secondary".into(),
            role: FailoverRole::Secondary,
            health_check_id: None,
        });
    provider
        .apply(&ChangeBatch::new(vec![
            Change::create(primary.clone()),
            Change::create(secondary.clone()),
        ]))
        .await
        .expect("create failover sets");
    for r in [&primary, &secondary] {
        let got = provider
            .get(&r.key())
            .await
            .unwrap()
            .expect("failover set reads back");
        assert!(got.same_data(r), "read {got:?}, wrote {r:?}");
    }
    cleanup(provider, &[primary, secondary]).await;
}

/// Once a change is in sync, the authoritative servers answer the new
/// values.
pub async fn authoritative_answer_follows_change(
    provider: &dyn DnsProvider,
    base: &str,
    wait: &WaitOptions,
) {
    let r = RecordSet::new(&name(base, "auth"), RecordType::A, 60, ["192.0.2.100"]);
    let info = provider
        .apply_one(Change::create(r.clone()))
        .await
        .expect("create");
    provider.wait_for_sync(&info, wait).await.expect("in sync");
    let answer = provider
        .query_authoritative(&r.name, RecordType::A)
        .await
        .expect("query");
    assert_eq!(
        answer,
        vec!["192.0.2.100".to_string()],
        "authoritative answer"
    );
    cleanup(provider, &[r]).await;
    let gone = provider
        .query_authoritative(&name(base, "auth"), RecordType::A)
        .await
        .expect("query");
    assert!(gone.is_empty(), "no answer once deleted, got {gone:?}");
}

/// The alias capability: an alias record reads back with its target.
/// Not part of [`all`] because the target zone id is the caller's.
pub async fn alias_round_trip(provider: &dyn DnsProvider, base: &str, target_zone_id: &str) {
    let target = RecordSet::new(
        &name(base, "alias-target"),
        RecordType::A,
        60,
        ["192.0.2.110"],
    );
    let alias = RecordSet {
        name: name(base, "alias"),
        rtype: RecordType::A,
        ttl: None,
        values: vec![],
        alias: Some(AliasTarget {
            hosted_zone_id: target_zone_id.into(),
            dns_name: target.name.clone(),
            evaluate_target_health: false,
        }),
        routing: None,
    };
    provider
        .apply(&ChangeBatch::new(vec![
            Change::create(target.clone()),
            Change::create(alias.clone()),
        ]))
        .await
        .expect("create alias");
    let got = provider
        .get(&alias.key())
        .await
        .unwrap()
        .expect("alias reads back");
    assert!(
        got.same_data(&alias.validate().unwrap()),
        "read {got:?}, wrote {alias:?}"
    );
    cleanup(provider, &[alias, target]).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dns::InMemoryDnsProvider;

    #[tokio::test]
    async fn in_memory_provider_conforms() {
        let p = InMemoryDnsProvider::new("example.test").with_pending_polls(2);
        let wait = WaitOptions::new(Duration::from_millis(1), Duration::from_secs(5));
        all(&p, "conf.example.test.", &wait).await;
        alias_round_trip(&p, "conf.example.test.", "ZMEMORY").await;
        unknown_change_is_not_found(&p).await;
        assert_eq!(p.records(), vec![], "the suite cleaned up after itself");
    }
}
