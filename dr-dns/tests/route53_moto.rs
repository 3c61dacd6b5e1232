//! The Route53 provider through the SDK against moto's Route53 (started by
//! scripts/services/s3.sh; `AWS_ENDPOINT_URL` points at it): the wire
//! protocol, signing and XML. What moto gets wrong (every change INSYNC at
//! once, duplicate CREATEs accepted, batches not atomic) is covered with
//! recorded AWS responses in route53_recorded.rs.

mod common;

use std::time::Duration;

use dr_core::conformance;
use dr_core::dns::{DnsProvider, RecordKey, RecordType, WaitOptions};
use dr_core::Error;
use dr_dns::{DnsError, Route53Builder, Route53Config};

#[tokio::test(flavor = "multi_thread")]
async fn route53_on_moto_conforms() {
    if common::server_env("AWS_ENDPOINT_URL", "route53_on_moto_conforms").is_none() {
        return;
    }
    let (id, name) = common::moto_zone("conf").await;
    // Zone by name, endpoint from AWS_ENDPOINT_URL.
    let p = Route53Builder::new(Route53Config {
        zone_name: Some(name.clone()),
        // moto has no TestDNSAnswer; route53_recorded.rs tests it.
        authoritative_query: Some(false),
        ..Default::default()
    })
    .build()
    .await
    .expect("provider builds");
    assert_eq!(p.zone_id(), id, "the zone is found by name");
    let wait = WaitOptions::new(Duration::from_millis(100), Duration::from_secs(10));
    conformance::dns::all(&p, &format!("c.{name}"), &wait).await;
    conformance::dns::alias_round_trip(&p, &format!("c.{name}"), &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn zone_by_id_and_missing_zones() {
    let Some(endpoint) = common::server_env("AWS_ENDPOINT_URL", "zone_by_id_and_missing_zones")
    else {
        return;
    };
    let (id, name) = common::moto_zone("byid").await;
    let p = Route53Builder::new(Route53Config {
        zone_id: Some(format!("/hostedzone/{id}")),
        endpoint_url: Some(endpoint.clone()),
        ..Default::default()
    })
    .build()
    .await
    .expect("zone by id");
    assert_eq!(p.zone_name(), name);
    let none = p
        .get(&RecordKey::new(&format!("nothing.{name}"), RecordType::A).unwrap())
        .await;
    assert_eq!(none.unwrap(), None);

    let e = Route53Builder::new(Route53Config {
        zone_name: Some(format!("{}.nowhere.test.", common::unique("z"))),
        ..Default::default()
    })
    .build()
    .await
    .unwrap_err();
    assert!(matches!(e, DnsError::ZoneNotFound { .. }), "{e:?}");
    let e: Error = e.into();
    assert!(matches!(e, Error::NotFound { .. }));

    // Two zones of one name (a public and a private zone, say): ask for the id.
    common::moto_admin()
        .await
        .create_hosted_zone()
        .name(&name)
        .caller_reference(common::unique("ref"))
        .send()
        .await
        .unwrap();
    let e = Route53Builder::new(Route53Config {
        zone_name: Some(name.clone()),
        ..Default::default()
    })
    .build()
    .await
    .unwrap_err();
    assert!(matches!(e, DnsError::InvalidConfig { .. }), "{e:?}");
    assert!(e.to_string().contains("zone_id"), "{e}");

    let e = Route53Builder::new(Route53Config::default())
        .build()
        .await
        .unwrap_err();
    assert!(matches!(e, DnsError::InvalidConfig { .. }), "{e:?}");
}
