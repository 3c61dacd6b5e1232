//! RFC 2136 dynamic updates signed with TSIG (RFC 8945), for on-premise zones
//! (BIND, Knot, PowerDNS). `hickory` does the protocol.
//!
//! - A change batch is one UPDATE message: the server applies it all or
//!   nothing, after checking its prerequisites (RFC 2136 section 3.2 and 3.4).
//!   `CREATE` requires "RRset does not exist" (2.4.3); `DELETE` and
//!   `Expect::Current` require "RRset exists (value dependent)" (2.4.2), which
//!   compares the whole RRset; `UPSERT` deletes the RRset (2.5.2) and adds the
//!   new records (2.5.1).
//! - Prerequisites are checked against the zone before any update of the
//!   message, so one batch changes each record set at most once.
//! - Reads are authoritative queries to the primary (the `AA` bit is
//!   required).
//! - A change is "in sync" when every listed secondary serves a SOA serial at
//!   least the primary's after the update (serial arithmetic, RFC 1982).
//!   Without secondaries a change is in sync once the primary accepted it.
//! - Weighted, failover and alias record sets do not exist in plain DNS: they
//!   are [`dr_core::Error::Unsupported`].

use std::fmt::{self, Display};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use dr_core::dns::{
    normalize_name, ChangeAction, ChangeBatch, ChangeInfo, ChangeStatus, DnsCapabilities,
    DnsProvider, Expect, RecordKey, RecordSet, RecordType,
};
use hickory_client::client::{Client, ClientHandle};
use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType as HType};
use hickory_proto::runtime::TokioRuntimeProvider;
use hickory_proto::udp::UdpClientStream;
use hickory_proto::xfer::{DnsHandle, DnsResponse, FirstAnswer};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::DnsError;

/// Default environment variable holding the base64 TSIG secret.
pub const DEFAULT_SECRET_ENV: &str = "DR_DNS_TSIG_SECRET";

/// Configuration of an [`Rfc2136`] provider, as in `dr.toml`:
///
/// ```toml
/// [dns]
/// provider = "rfc2136"
/// server = "10.0.0.53:53"
/// zone = "corp.example."
/// key_name = "dr-key"
/// algorithm = "hmac-sha256"
/// secret_file = "/etc/dr/tsig.secret"   # or the variable named by secret_env
/// secondaries = ["10.0.1.53:53"]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rfc2136Config {
    /// The primary server, `ip:port` (port 53 when omitted).
    pub server: String,
    /// The zone updated.
    pub zone: String,
    /// The TSIG key's name, as the server knows it. Without it updates are
    /// unsigned (which servers normally refuse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// `hmac-sha256` (default), `hmac-sha384` or `hmac-sha512`.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    /// A file holding the base64 secret (as `tsig-keygen` prints it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// The environment variable holding the base64 secret when no file is
    /// given (default `DR_DNS_TSIG_SECRET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Secondary servers whose SOA serial must catch up for a change to be
    /// in sync, and which confirmations also ask.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secondaries: Vec<String>,
    /// Timeout of one request (default `5s`).
    #[serde(
        default,
        with = "dr_core::serde_duration::human_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

fn default_algorithm() -> String {
    "hmac-sha256".into()
}

impl Rfc2136Config {
    /// A configuration for `server` and `zone`, unsigned until a key is set.
    pub fn new(server: impl Into<String>, zone: impl Into<String>) -> Self {
        Rfc2136Config {
            server: server.into(),
            zone: zone.into(),
            key_name: None,
            algorithm: default_algorithm(),
            secret_file: None,
            secret_env: None,
            secondaries: Vec::new(),
            timeout: None,
        }
    }
}

/// A TSIG key: name, algorithm, secret.
#[derive(Clone)]
pub struct TsigKey {
    /// Key name.
    pub name: String,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub algorithm: String,
    /// The base64 secret.
    pub secret: SecretString,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl TsigKey {
    fn signer(&self) -> Result<TSigner, DnsError> {
        // RFC 8945 section 6: HMAC-SHA256 is mandatory; MD5 and SHA-1 are
        // not accepted here.
        let algorithm = match self.algorithm.to_ascii_lowercase().trim_end_matches('.') {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => {
                return Err(DnsError::InvalidConfig {
                    key: "dns.algorithm".into(),
                    reason: format!(
                        "{other:?} is not supported; use hmac-sha256, hmac-sha384 or hmac-sha512"
                    ),
                })
            }
        };
        let secret = base64::engine::general_purpose::STANDARD
            .decode(self.secret.expose_secret().trim())
            .map_err(|_| DnsError::InvalidConfig {
                key: "dns.secret".into(),
                reason: format!("the TSIG secret of key {} is not valid base64", self.name),
            })?;
        if secret.is_empty() {
            return Err(DnsError::InvalidConfig {
                key: "dns.secret".into(),
                reason: format!("the TSIG secret of key {} is empty", self.name),
            });
        }
        let name = Name::from_ascii(&self.name).map_err(|e| DnsError::InvalidConfig {
            key: "dns.key_name".into(),
            reason: format!("{:?}: {e}", self.name),
        })?;
        // Fudge 300 s, the value RFC 8945 section 5.2.3 recommends.
        TSigner::new(secret, algorithm, name, 300).map_err(|e| DnsError::InvalidConfig {
            key: "dns.algorithm".into(),
            reason: e.to_string(),
        })
    }
}

/// Builds an [`Rfc2136`].
#[derive(Debug)]
pub struct Rfc2136Builder {
    config: Rfc2136Config,
    key: Option<TsigKey>,
}

impl Rfc2136Builder {
    /// A builder from a configuration; the secret is read at
    /// [`build`](Self::build) from `secret_file` or the environment.
    pub fn new(config: Rfc2136Config) -> Self {
        Rfc2136Builder { config, key: None }
    }

    /// Uses this key instead of the configuration's.
    pub fn key(mut self, key: TsigKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Checks the configuration and reads the secret.
    ///
    /// # Errors
    /// [`DnsError::InvalidConfig`] naming the key: an unparsable server
    /// address or zone, a key name without a secret, an unreadable secret file,
    /// bad base64, an unsupported algorithm.
    pub fn build(self) -> Result<Rfc2136, DnsError> {
        let c = &self.config;
        let server = parse_addr(&c.server, "dns.server")?;
        let zone_str = normalize_name(&c.zone).map_err(|e| DnsError::InvalidConfig {
            key: "dns.zone".into(),
            reason: e.to_string(),
        })?;
        let zone = Name::from_ascii(&zone_str).map_err(|e| DnsError::InvalidConfig {
            key: "dns.zone".into(),
            reason: e.to_string(),
        })?;
        let secondaries = c
            .secondaries
            .iter()
            .map(|s| parse_addr(s, "dns.secondaries"))
            .collect::<Result<Vec<_>, _>>()?;
        let key = match (self.key, &c.key_name) {
            (Some(k), _) => Some(k),
            (None, None) => None,
            (None, Some(name)) => {
                let secret = match (&c.secret_file, &c.secret_env) {
                    (Some(path), _) => {
                        std::fs::read_to_string(path).map_err(|e| DnsError::InvalidConfig {
                            key: "dns.secret_file".into(),
                            reason: format!("cannot read {}: {e}", path.display()),
                        })?
                    }
                    (None, env) => {
                        let var = env.as_deref().unwrap_or(DEFAULT_SECRET_ENV);
                        std::env::var(var).map_err(|_| DnsError::InvalidConfig {
                            key: "dns.secret_env".into(),
                            reason: format!("key {name} needs its secret in a file (dns.secret_file) or in ${var}"),
                        })?
                    }
                };
                Some(TsigKey {
                    name: name.clone(),
                    algorithm: c.algorithm.clone(),
                    secret: SecretString::from(secret.trim().to_string()),
                })
            }
        };
        let signer = key.as_ref().map(TsigKey::signer).transpose()?.map(Arc::new);
        Ok(Rfc2136 {
            server,
            zone,
            zone_str,
            signer,
            key_name: key.map(|k| k.name),
            secondaries,
            timeout: c.timeout.unwrap_or(Duration::from_secs(5)),
        })
    }
}

fn parse_addr(s: &str, key: &str) -> Result<SocketAddr, DnsError> {
    SocketAddr::from_str(s)
        .or_else(|_| std::net::IpAddr::from_str(s).map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| DnsError::InvalidConfig {
            key: key.into(),
            reason: format!("{s:?} is not an address (ip or ip:port)"),
        })
}

/// A zone on an RFC 2136 server as a [`DnsProvider`].
#[derive(Clone)]
pub struct Rfc2136 {
    server: SocketAddr,
    zone: Name,
    zone_str: String,
    signer: Option<Arc<TSigner>>,
    key_name: Option<String>,
    secondaries: Vec<SocketAddr>,
    timeout: Duration,
}

impl fmt::Debug for Rfc2136 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rfc2136")
            .field("server", &self.server)
            .field("zone", &self.zone_str)
            .field("key_name", &self.key_name)
            .field("secondaries", &self.secondaries)
            .finish()
    }
}

impl Display for Rfc2136 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rfc2136:{}@{}", self.zone_str, self.server)
    }
}

impl Rfc2136 {
    /// The zone, absolute.
    pub fn zone(&self) -> &str {
        &self.zone_str
    }

    async fn client(&self, addr: SocketAddr, signed: bool) -> Result<Client, DnsError> {
        let finalizer: Option<Arc<dyn hickory_proto::op::MessageFinalizer>> = if signed {
            self.signer
                .clone()
                .map(|s| s as Arc<dyn hickory_proto::op::MessageFinalizer>)
        } else {
            None
        };
        let stream = UdpClientStream::builder(addr, TokioRuntimeProvider::new())
            .with_timeout(Some(self.timeout))
            .with_signer(finalizer)
            .build();
        let (client, background) =
            Client::connect(stream)
                .await
                .map_err(|e| DnsError::Unavailable {
                    what: format!("DNS server {addr}"),
                    source: Box::new(e),
                })?;
        tokio::spawn(background);
        Ok(client)
    }

    /// An authoritative query; `None` for NXDOMAIN.
    async fn query(
        &self,
        addr: SocketAddr,
        name: &Name,
        rtype: HType,
    ) -> Result<DnsResponse, DnsError> {
        let mut client = self.client(addr, false).await?;
        let what = format!("query {name} {rtype} at {addr}");
        let response = client
            .query(name.clone(), DNSClass::IN, rtype)
            .await
            .map_err(|e| DnsError::Unavailable {
                what: what.clone(),
                source: Box::new(e),
            })?;
        match response.response_code() {
            ResponseCode::NoError | ResponseCode::NXDomain => {}
            ResponseCode::Refused | ResponseCode::NotAuth => {
                return Err(DnsError::PermissionDenied {
                    what,
                    reason: format!(
                        "{} (is the zone {} served there?)",
                        response.response_code(),
                        self.zone_str
                    ),
                })
            }
            code => {
                return Err(DnsError::Unavailable {
                    what,
                    source: format!("server answered {code}").into(),
                })
            }
        }
        if !response.authoritative() {
            return Err(DnsError::Protocol {
                what,
                reason: format!(
                    "the answer is not authoritative: the server does not serve {}",
                    self.zone_str
                ),
            });
        }
        Ok(response)
    }

    async fn read(&self, addr: SocketAddr, key: &RecordKey) -> Result<Option<RecordSet>, DnsError> {
        let name = to_name(&key.name)?;
        let response = self.query(addr, &name, to_htype(key.rtype)).await?;
        let mut ttl = None;
        let mut values = Vec::new();
        for r in response.answers() {
            if r.name() == &name && r.record_type() == to_htype(key.rtype) {
                ttl = Some(ttl.map_or(r.ttl(), |t: u32| t.min(r.ttl())));
                values.push(rdata_value(r.data())?);
            }
        }
        Ok(ttl.map(|ttl| RecordSet {
            name: key.name.clone(),
            rtype: key.rtype,
            ttl: Some(ttl),
            values,
            alias: None,
            routing: None,
        }))
    }

    async fn serial(&self, addr: SocketAddr) -> Result<u32, DnsError> {
        let response = self.query(addr, &self.zone, HType::SOA).await?;
        response
            .answers()
            .iter()
            .find_map(|r| match r.data() {
                RData::SOA(soa) => Some(soa.serial()),
                _ => None,
            })
            .ok_or_else(|| DnsError::Protocol {
                what: format!("SOA of {} at {addr}", self.zone_str),
                reason: "no SOA record in the answer".into(),
            })
    }

    fn update_message(&self, batch: &ChangeBatch) -> Result<Message, DnsError> {
        let mut zone = Query::new();
        zone.set_name(self.zone.clone())
            .set_query_class(DNSClass::IN)
            .set_query_type(HType::SOA);
        let mut message = Message::new();
        message
            .set_id(rand_id())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Update)
            .set_recursion_desired(false);
        message.add_zone(zone);
        let mut seen = std::collections::BTreeSet::new();
        for c in &batch.changes {
            let key = c.record.key();
            if !seen.insert(key.clone()) {
                return Err(DnsError::InvalidConfig {
                    key: "changes".into(),
                    reason: format!(
                        "{key} is changed twice in one batch; RFC 2136 checks all prerequisites before any update"
                    ),
                });
            }
            let name = to_name(&c.record.name)?;
            let htype = to_htype(c.record.rtype);
            let absent = || {
                // RFC 2136 2.4.3: RRset does not exist.
                let mut r = Record::update0(name.clone(), 0, htype);
                r.set_dns_class(DNSClass::NONE);
                r
            };
            let exists_with = |rs: &RecordSet| -> Result<Vec<Record>, DnsError> {
                // RFC 2136 2.4.2: RRset exists (value dependent), TTL 0.
                to_records(rs, 0, DNSClass::IN)
            };
            let delete_rrset = || {
                // RFC 2136 2.5.2: delete an RRset.
                let mut r = Record::update0(name.clone(), 0, htype);
                r.set_dns_class(DNSClass::ANY);
                r
            };
            match &c.expect {
                Expect::Any => {}
                Expect::Absent => message.add_pre_requisite(absent()),
                Expect::Current(e) => message.add_pre_requisites(exists_with(e)?),
            }
            let ttl = c.record.ttl.unwrap_or(0);
            match c.action {
                ChangeAction::Create => {
                    message.add_pre_requisite(absent());
                    message.add_updates(to_records(&c.record, ttl, DNSClass::IN)?);
                }
                ChangeAction::Upsert => {
                    message.add_update(delete_rrset());
                    message.add_updates(to_records(&c.record, ttl, DNSClass::IN)?);
                }
                ChangeAction::Delete => {
                    message.add_pre_requisites(exists_with(&c.record)?);
                    message.add_update(delete_rrset());
                }
            }
        }
        message
            .extensions_mut()
            .get_or_insert_with(Edns::new)
            .set_max_payload(1232)
            .set_version(0);
        Ok(message)
    }
}

fn rand_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish() as u16
}

fn to_name(name: &str) -> Result<Name, DnsError> {
    Name::from_ascii(name).map_err(|e| DnsError::InvalidConfig {
        key: "record.name".into(),
        reason: format!("{name:?}: {e}"),
    })
}

fn to_htype(t: RecordType) -> HType {
    match t {
        RecordType::A => HType::A,
        RecordType::AAAA => HType::AAAA,
        RecordType::CNAME => HType::CNAME,
        RecordType::TXT => HType::TXT,
        _ => HType::Unknown(0),
    }
}

fn to_records(rs: &RecordSet, ttl: u32, class: DNSClass) -> Result<Vec<Record>, DnsError> {
    let name = to_name(&rs.name)?;
    let bad = |v: &str| DnsError::InvalidConfig {
        key: "record.values".into(),
        reason: format!("{} {}: {v:?}", rs.name, rs.rtype),
    };
    rs.values
        .iter()
        .map(|v| {
            let data = match rs.rtype {
                RecordType::A => RData::A(A(v.parse().map_err(|_| bad(v))?)),
                RecordType::AAAA => RData::AAAA(AAAA(v.parse().map_err(|_| bad(v))?)),
                RecordType::CNAME => RData::CNAME(CNAME(to_name(v)?)),
                RecordType::TXT => RData::TXT(TXT::new(split_txt(v))),
                _ => return Err(bad(v)),
            };
            let mut r = Record::from_rdata(name.clone(), ttl, data);
            r.set_dns_class(class);
            Ok(r)
        })
        .collect()
}

/// A TXT value as character-strings of at most 255 octets (RFC 1035 3.3.14).
fn split_txt(v: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    for ch in v.chars() {
        if cur.len() + ch.len_utf8() > 255 {
            parts.push(std::mem::take(&mut cur));
        }
        cur.push(ch);
    }
    parts.push(cur);
    parts
}

fn rdata_value(data: &RData) -> Result<String, DnsError> {
    Ok(match data {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::CNAME(c) => c.0.to_ascii().to_ascii_lowercase(),
        RData::TXT(t) => t
            .txt_data()
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<String>(),
        other => {
            return Err(DnsError::Protocol {
                what: "answer".into(),
                reason: format!("unexpected record data {other}"),
            })
        }
    })
}

/// Serial arithmetic (RFC 1982 section 3.2): whether `a` is at least `b`.
fn serial_at_least(a: u32, b: u32) -> bool {
    a == b || (a.wrapping_sub(b) as i32) > 0
}

/// How an update response code maps onto errors (RFC 2136 section 2.2,
/// RFC 8945 section 5.3 for TSIG).
fn update_error(code: ResponseCode, what: &str, zone: &str, key: Option<&str>) -> DnsError {
    match code {
        ResponseCode::YXDomain
        | ResponseCode::YXRRSet
        | ResponseCode::NXDomain
        | ResponseCode::NXRRSet => DnsError::Conflict {
            record: what.to_string(),
            reason: format!("a prerequisite failed: {code} ({})", code.to_str()),
        },
        ResponseCode::Refused => DnsError::PermissionDenied {
            what: format!("update of zone {zone}"),
            reason: match key {
                None => "REFUSED: the update is unsigned and the server requires a TSIG key".into(),
                Some(k) => format!("REFUSED: key {k} is not allowed to update these names"),
            },
        },
        ResponseCode::NotAuth
        | ResponseCode::BADSIG
        | ResponseCode::BADKEY
        | ResponseCode::BADTIME => DnsError::PermissionDenied {
            what: format!("update of zone {zone}"),
            reason: format!(
                "{code}: the server did not accept the TSIG signature (key name, secret or clock)"
            ),
        },
        ResponseCode::NotZone => DnsError::InvalidConfig {
            key: "record.name".into(),
            reason: format!("{what} is not in zone {zone}"),
        },
        ResponseCode::ServFail => DnsError::Unavailable {
            what: format!("update of zone {zone}"),
            source: "SERVFAIL".into(),
        },
        code => DnsError::Protocol {
            what: format!("update of zone {zone}"),
            reason: format!("server answered {code}"),
        },
    }
}

#[async_trait]
impl DnsProvider for Rfc2136 {
    fn capabilities(&self) -> DnsCapabilities {
        DnsCapabilities::none()
            .with_atomic_batches(true)
            .with_change_status(!self.secondaries.is_empty())
            .with_authoritative_query(true)
    }

    async fn get(&self, key: &RecordKey) -> dr_core::Result<Option<RecordSet>> {
        let key = RecordKey {
            name: normalize_name(&key.name)?,
            ..key.clone()
        };
        if key.set_identifier.is_some() {
            return Err(dr_core::Error::Unsupported {
                what: format!("set identifiers (weighted or failover sets) on {self}"),
            });
        }
        Ok(self.read(self.server, &key).await?)
    }

    async fn apply(&self, batch: &ChangeBatch) -> dr_core::Result<ChangeInfo> {
        let batch = batch.validate()?;
        for c in &batch.changes {
            self.capabilities().check_record(&c.record, self)?;
            let name = to_name(&c.record.name)?;
            if !self.zone.zone_of(&name) {
                return Err(DnsError::InvalidConfig {
                    key: "record.name".into(),
                    reason: format!("{} is not in zone {}", c.record.name, self.zone_str),
                }
                .into());
            }
        }
        let what = batch
            .changes
            .iter()
            .map(|c| c.record.key().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let message = self.update_message(&batch)?;
        let client = self.client(self.server, true).await?;
        let response = client.send(message).first_answer().await.map_err(|e| {
            let text = e.to_string();
            // A wrongly signed update gets an unsigned NOTAUTH/BADSIG answer,
            // which hickory cannot verify against the request's signature.
            if self.signer.is_some() && text.to_ascii_lowercase().contains("tsig") {
                tracing::debug!(error = %text, "the update's answer failed TSIG verification");
                DnsError::PermissionDenied {
                    what: format!("update of zone {}", self.zone_str),
                    reason: format!(
                        "the server rejected the TSIG signature of key {} (BADSIG or BADKEY: wrong secret, unknown key name, or a clock off by more than 300 s)",
                        self.key_name.as_deref().unwrap_or("?")
                    ),
                }
            } else {
                DnsError::Unavailable {
                    what: format!("update of zone {} at {}", self.zone_str, self.server),
                    source: Box::new(e),
                }
            }
        })?;
        if response.response_code() != ResponseCode::NoError {
            return Err(update_error(
                response.response_code(),
                &what,
                &self.zone_str,
                self.key_name.as_deref(),
            )
            .into());
        }
        let serial = self.serial(self.server).await?;
        let id = format!("{}@{serial}", self.zone_str);
        tracing::info!(zone = %self.zone_str, server = %self.server, serial, records = %what, "RFC 2136 update applied");
        let status = if self.secondaries.is_empty() {
            ChangeStatus::InSync
        } else {
            self.change_status(&id).await?
        };
        Ok(ChangeInfo {
            id,
            status,
            submitted_at: Some(chrono::Utc::now()),
        })
    }

    async fn change_status(&self, id: &str) -> dr_core::Result<ChangeStatus> {
        let not_found = || dr_core::Error::NotFound {
            what: format!("DNS change {id} on {self}"),
        };
        let (zone, serial) = id.rsplit_once('@').ok_or_else(not_found)?;
        if zone != self.zone_str {
            return Err(not_found());
        }
        let serial: u32 = serial.parse().map_err(|_| not_found())?;
        for s in &self.secondaries {
            let have = self.serial(*s).await?;
            if !serial_at_least(have, serial) {
                tracing::debug!(secondary = %s, have, want = serial, "secondary not in sync yet");
                return Ok(ChangeStatus::Pending);
            }
        }
        Ok(ChangeStatus::InSync)
    }

    async fn query_authoritative(
        &self,
        name: &str,
        rtype: RecordType,
    ) -> dr_core::Result<Vec<String>> {
        let key = RecordKey::new(name, rtype)?;
        let mut answer: Option<Vec<String>> = None;
        for addr in std::iter::once(self.server).chain(self.secondaries.iter().copied()) {
            let mut values = self
                .read(addr, &key)
                .await?
                .map(|r| r.values)
                .unwrap_or_default();
            values.sort();
            match &answer {
                None => answer = Some(values),
                Some(first) if *first != values => {
                    return Err(dr_core::Error::VerificationFailed {
                        what: format!("{key} on {self}"),
                        reason: format!("{} answers {values:?}, the primary {first:?}", addr),
                    })
                }
                Some(_) => {}
            }
        }
        Ok(answer.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(serial_at_least(5, 5));
        assert!(serial_at_least(6, 5));
        assert!(!serial_at_least(4, 5));
        assert!(
            serial_at_least(2, u32::MAX - 1),
            "a wrapped serial is newer"
        );
    }

    #[test]
    fn bad_configuration_names_the_key() {
        let mut c = Rfc2136Config::new("not-an-address", "example.test.");
        let e = Rfc2136Builder::new(c.clone()).build().unwrap_err();
        assert!(
            matches!(e, DnsError::InvalidConfig { ref key, .. } if key == "dns.server"),
            "{e:?}"
        );
        c.server = "127.0.0.1".into();
        c.key_name = Some("k".into());
        c.secret_env = Some("DR_DNS_TEST_NO_SUCH_VARIABLE".into());
        let e = Rfc2136Builder::new(c.clone()).build().unwrap_err();
        assert!(
            matches!(e, DnsError::InvalidConfig { ref key, .. } if key == "dns.secret_env"),
            "{e:?}"
        );
        let key = TsigKey {
            name: "k".into(),
            algorithm: "hmac-md5".into(),
            secret: SecretString::from("c2VjcmV0"),
        };
        let e = Rfc2136Builder::new(c.clone()).key(key).build().unwrap_err();
        assert!(
            matches!(e, DnsError::InvalidConfig { ref key, .. } if key == "dns.algorithm"),
            "{e:?}"
        );
        let key = TsigKey {
            name: "k".into(),
            algorithm: "hmac-sha256".into(),
            secret: SecretString::from("not base64!"),
        };
        let e = Rfc2136Builder::new(c).key(key).build().unwrap_err();
        assert!(
            !e.to_string().contains("not base64!"),
            "the secret is not in the error: {e}"
        );
    }

    #[test]
    fn long_txt_is_split() {
        let parts = split_txt(&"a".repeat(600));
        assert_eq!(
            parts.iter().map(String::len).collect::<Vec<_>>(),
            vec![255, 255, 90]
        );
    }
}
