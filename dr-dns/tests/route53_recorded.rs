//! The Route53 provider against recorded AWS responses served by wiremock,
//! for what moto gets wrong or cannot show: PENDING then INSYNC, conflicts
//! reported by the server (InvalidChangeBatch), throttling and its retries, a
//! wait that times out, NoSuchChange, bad credentials, TestDNSAnswer, the
//! signing region.
//!
//! The XML bodies follow the Route53 API reference examples
//! (<https://docs.aws.amazon.com/Route53/latest/APIReference/>); the error
//! bodies are the `ErrorResponse` form Route53 returns today, including for
//! InvalidChangeBatch (see aws/aws-sdk-kotlin#1435).

use std::time::Duration;

use aws_sdk_route53::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use dr_core::conformance;
use dr_core::dns::{Change, DnsProviderExt, RecordSet, RecordType, WaitOptions};
use dr_core::Error;
use dr_dns::{failover, FailoverOptions, FailoverSpec, Route53, Route53Builder, Route53Config};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const NS: &str = "https://route53.amazonaws.com/doc/2013-04-01/";
const ZONE: &str = "Z1D633PJN98FT9";

fn xml(status: u16, body: String) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("content-type", "text/xml")
        .insert_header("x-amzn-requestid", "b25f48e8-84fd-11e6-80d9-574e0c4664cb")
        .set_body_string(body)
}

fn error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    xml(
        status,
        format!(
            r#"<?xml version="1.0"?>
<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>b25f48e8-84fd-11e6-80d9-574e0c4664cb</RequestId></ErrorResponse>"#
        ),
    )
}

fn change_info(root: &str, status: &str) -> ResponseTemplate {
    xml(
        200,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<{root} xmlns="{NS}"><ChangeInfo><Id>/change/C2682N5HXP0BZ4</Id><Status>{status}</Status><SubmittedAt>2026-03-10T01:36:41.958Z</SubmittedAt></ChangeInfo></{root}>"#
        ),
    )
}

fn rrsets(records: &[(&str, u32, &[&str])]) -> ResponseTemplate {
    let mut sets = String::new();
    for (name, ttl, values) in records {
        let vals: String = values
            .iter()
            .map(|v| format!("<ResourceRecord><Value>{v}</Value></ResourceRecord>"))
            .collect();
        sets.push_str(&format!(
            "<ResourceRecordSet><Name>{name}</Name><Type>A</Type><TTL>{ttl}</TTL><ResourceRecords>{vals}</ResourceRecords></ResourceRecordSet>"
        ));
    }
    xml(
        200,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<ListResourceRecordSetsResponse xmlns="{NS}"><ResourceRecordSets>{sets}</ResourceRecordSets><IsTruncated>false</IsTruncated><MaxItems>100</MaxItems></ListResourceRecordSetsResponse>"#
        ),
    )
}

/// A mock Route53 with the zone; `current` is what ListResourceRecordSets shows.
async fn server(current: &[(&str, u32, &[&str])]) -> MockServer {
    let s = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/2013-04-01/hostedzone/{ZONE}")))
        .respond_with(xml(
            200,
            format!(
                r#"<?xml version="1.0" encoding="UTF-8"?>
<GetHostedZoneResponse xmlns="{NS}"><HostedZone><Id>/hostedzone/{ZONE}</Id><Name>example.com.</Name><CallerReference>2017-03-01T11:22:14Z</CallerReference><Config><PrivateZone>false</PrivateZone></Config><ResourceRecordSetCount>3</ResourceRecordSetCount></HostedZone><DelegationSet><NameServers><NameServer>ns-2048.awsdns-64.com</NameServer></NameServers></DelegationSet></GetHostedZoneResponse>"#
            ),
        ))
        .mount(&s)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/2013-04-01/hostedzone/{ZONE}/rrset")))
        .respond_with(rrsets(current))
        .mount(&s)
        .await;
    s
}

/// A provider pointed at the mock, configured for eu-west-1 (it must still
/// sign for us-east-1), with fast retries.
async fn provider(s: &MockServer, max_attempts: u32) -> Route53 {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        )))
        .http_client(http)
        .build();
    Route53Builder::new(Route53Config {
        zone_id: Some(ZONE.into()),
        endpoint_url: Some(s.uri()),
        max_attempts: Some(max_attempts),
        initial_backoff: Some(Duration::from_millis(10)),
        ..Default::default()
    })
    .sdk_config(sdk)
    .build()
    .await
    .expect("provider builds against the mock")
}

async fn requests(s: &MockServer, m: &str, p: &str) -> Vec<wiremock::Request> {
    s.received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == m && r.url.path() == p)
        .collect()
}

#[tokio::test]
async fn failover_polls_pending_until_insync_and_confirms() {
    let s = server(&[("api.example.com.", 60, &["10.0.0.10"])]).await;
    Mock::given(method("POST"))
        .and(path(format!("/2013-04-01/hostedzone/{ZONE}/rrset")))
        .respond_with(change_info("ChangeResourceRecordSetsResponse", "PENDING"))
        .mount(&s)
        .await;
    Mock::given(method("GET"))
        .and(path("/2013-04-01/change/C2682N5HXP0BZ4"))
        .respond_with(change_info("GetChangeResponse", "PENDING"))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&s)
        .await;
    Mock::given(method("GET"))
        .and(path("/2013-04-01/change/C2682N5HXP0BZ4"))
        .respond_with(change_info("GetChangeResponse", "INSYNC"))
        .with_priority(2)
        .mount(&s)
        .await;
    Mock::given(method("GET"))
        .and(path("/2013-04-01/testdnsanswer"))
        .respond_with(xml(
            200,
            format!(
                r#"<?xml version="1.0" encoding="UTF-8"?>
<TestDNSAnswerResponse xmlns="{NS}"><Nameserver>ns-2048.awsdns-64.com</Nameserver><RecordName>api.example.com.</RecordName><RecordType>A</RecordType><RecordData><RecordDataEntry>10.1.0.10</RecordDataEntry></RecordData><ResponseCode>NOERROR</ResponseCode><Protocol>UDP</Protocol></TestDNSAnswerResponse>"#
            ),
        ))
        .mount(&s)
        .await;
    let p = provider(&s, 3).await;
    let spec = FailoverSpec {
        poll_interval: Duration::from_millis(20),
        wait_timeout: Duration::from_secs(5),
        ..FailoverSpec::new("api.example.com", RecordType::A, ["10.1.0.10"])
            .from_values(["10.0.0.10"])
    };
    let report = failover(&p, &spec, &FailoverOptions::default())
        .await
        .expect("failover");
    assert_eq!(report.change.as_ref().unwrap().id, "C2682N5HXP0BZ4");
    assert_eq!(report.confirmed, Some(vec!["10.1.0.10".to_string()]));
    let polls = requests(&s, "GET", "/2013-04-01/change/C2682N5HXP0BZ4").await;
    assert_eq!(polls.len(), 3, "polled PENDING, PENDING, INSYNC");

    // The precondition is enforced by Route53 itself: DELETE of the exact
    // current set, then CREATE, in one batch.
    let posts = requests(&s, "POST", &format!("/2013-04-01/hostedzone/{ZONE}/rrset")).await;
    assert_eq!(posts.len(), 1);
    let body = String::from_utf8(posts[0].body.clone()).unwrap();
    let del = body.find("<Action>DELETE</Action>").expect("a DELETE");
    let cre = body.find("<Action>CREATE</Action>").expect("a CREATE");
    assert!(del < cre, "DELETE first: {body}");
    assert!(
        body[del..cre].contains("10.0.0.10") && body[cre..].contains("10.1.0.10"),
        "{body}"
    );

    // Signed for us-east-1 although the SDK config says eu-west-1.
    let auth = posts[0]
        .headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(auth.contains("/us-east-1/route53/aws4_request"), "{auth}");
    assert!(
        !auth.contains("wJalrXUtnFEMI"),
        "the secret key is never sent"
    );
}

#[tokio::test]
async fn invalid_change_batch_from_the_server_is_a_conflict() {
    // The read shows no record, but between read and write someone created
    // it: Route53 refuses the CREATE.
    let s = server(&[]).await;
    Mock::given(method("POST"))
        .and(path_regex(r"/rrset$"))
        .respond_with(error(
            400,
            "InvalidChangeBatch",
            "[Tried to create resource record set [name='api.example.com.', type='A'] but it already exists]",
        ))
        .mount(&s)
        .await;
    let p = provider(&s, 3).await;
    let r = RecordSet::new("api.example.com", RecordType::A, 60, ["10.1.0.10"]);
    let e = p.apply_one(Change::create(r)).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(
        requests(&s, "POST", &format!("/2013-04-01/hostedzone/{ZONE}/rrset"))
            .await
            .len(),
        1,
        "not retried"
    );
}

#[tokio::test]
async fn delete_that_does_not_match_is_a_conflict() {
    let s = server(&[("api.example.com.", 60, &["10.0.0.10"])]).await;
    Mock::given(method("POST"))
        .and(path_regex(r"/rrset$"))
        .respond_with(error(
            400,
            "InvalidChangeBatch",
            "[Tried to delete resource record set [name='api.example.com.', type='A'] but the values provided do not match the current values]",
        ))
        .mount(&s)
        .await;
    let p = provider(&s, 3).await;
    let r = RecordSet::new("api.example.com", RecordType::A, 60, ["10.0.0.10"]);
    let e = p.apply_one(Change::delete(r)).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
}

#[tokio::test]
async fn throttling_and_prior_request_are_retried() {
    for code in ["Throttling", "PriorRequestNotComplete"] {
        let s = server(&[]).await;
        Mock::given(method("POST"))
            .and(path_regex(r"/rrset$"))
            .respond_with(error(400, code, "Rate exceeded"))
            .up_to_n_times(2)
            .with_priority(1)
            .mount(&s)
            .await;
        Mock::given(method("POST"))
            .and(path_regex(r"/rrset$"))
            .respond_with(change_info("ChangeResourceRecordSetsResponse", "PENDING"))
            .with_priority(2)
            .mount(&s)
            .await;
        let p = provider(&s, 5).await;
        let r = RecordSet::new("api.example.com", RecordType::A, 60, ["10.1.0.10"]);
        let info = p
            .apply_one(Change::upsert(r))
            .await
            .unwrap_or_else(|e| panic!("{code} retried: {e:?}"));
        assert_eq!(info.id, "C2682N5HXP0BZ4");
        let posts = requests(&s, "POST", &format!("/2013-04-01/hostedzone/{ZONE}/rrset")).await;
        assert_eq!(posts.len(), 3, "{code}: two refusals then success");
    }
}

#[tokio::test]
async fn throttling_that_persists_is_retryable_unavailable() {
    let s = server(&[]).await;
    Mock::given(method("POST"))
        .and(path_regex(r"/rrset$"))
        .respond_with(error(400, "Throttling", "Rate exceeded"))
        .mount(&s)
        .await;
    let p = provider(&s, 3).await;
    let r = RecordSet::new("api.example.com", RecordType::A, 60, ["10.1.0.10"]);
    let e = p.apply_one(Change::upsert(r)).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(e.is_retryable());
    let posts = requests(&s, "POST", &format!("/2013-04-01/hostedzone/{ZONE}/rrset")).await;
    assert_eq!(posts.len(), 3, "max_attempts bounds the retries");
}

#[tokio::test]
async fn a_wait_that_never_syncs_times_out() {
    let s = server(&[]).await;
    Mock::given(method("GET"))
        .and(path("/2013-04-01/change/C2682N5HXP0BZ4"))
        .respond_with(change_info("GetChangeResponse", "PENDING"))
        .mount(&s)
        .await;
    let p = provider(&s, 3).await;
    let info = dr_core::dns::ChangeInfo {
        id: "C2682N5HXP0BZ4".into(),
        status: dr_core::dns::ChangeStatus::Pending,
        submitted_at: None,
    };
    let start = std::time::Instant::now();
    let e = p
        .wait_for_sync(
            &info,
            &WaitOptions::new(Duration::from_millis(20), Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(start.elapsed() < Duration::from_secs(2), "bounded");
    assert!(
        requests(&s, "GET", "/2013-04-01/change/C2682N5HXP0BZ4")
            .await
            .len()
            >= 3,
        "it polled"
    );
}

#[tokio::test]
async fn unknown_change_and_bad_credentials() {
    let s = server(&[]).await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/2013-04-01/change/"))
        .respond_with(error(
            404,
            "NoSuchChange",
            "A change with the specified change ID does not exist.",
        ))
        .mount(&s)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/rrset$"))
        .respond_with(error(
            403,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        ))
        .mount(&s)
        .await;
    let p = provider(&s, 3).await;
    conformance::dns::unknown_change_is_not_found(&p).await;
    let r = RecordSet::new("api.example.com", RecordType::A, 60, ["10.1.0.10"]);
    let e = p.apply_one(Change::upsert(r)).await.unwrap_err();
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
}
