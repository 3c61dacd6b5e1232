//! The record model: record types, keys, record sets with their routing,
//! and name normalisation.

use std::collections::BTreeSet;
use std::fmt::{self, Display};
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The record types `dr` manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[non_exhaustive]
pub enum RecordType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    #[allow(clippy::upper_case_acronyms)]
    AAAA,
    /// Canonical name.
    #[allow(clippy::upper_case_acronyms)]
    CNAME,
    /// Text.
    #[allow(clippy::upper_case_acronyms)]
    TXT,
}

impl RecordType {
    /// The type's mnemonic (`A`, `AAAA`, `CNAME`, `TXT`).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::AAAA => "AAAA",
            RecordType::CNAME => "CNAME",
            RecordType::TXT => "TXT",
        }
    }
}

impl Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RecordType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "A" => Ok(RecordType::A),
            "AAAA" => Ok(RecordType::AAAA),
            "CNAME" => Ok(RecordType::CNAME),
            "TXT" => Ok(RecordType::TXT),
            _ => Err(Error::InvalidConfig {
                key: "record.type".into(),
                reason: format!("unsupported record type {s:?}; supported: A, AAAA, CNAME, TXT"),
            }),
        }
    }
}

/// Identifies one record set: name, type and, for weighted or failover sets,
/// the set identifier.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordKey {
    /// Absolute name with a trailing dot.
    pub name: String,
    /// Record type.
    #[serde(rename = "type")]
    pub rtype: RecordType,
    /// Set identifier of a weighted or failover record set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_identifier: Option<String>,
}

impl RecordKey {
    /// A key with a normalised name and no set identifier.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the name is not a valid DNS name.
    pub fn new(name: &str, rtype: RecordType) -> Result<Self> {
        Ok(RecordKey {
            name: normalize_name(name)?,
            rtype,
            set_identifier: None,
        })
    }

    /// The same key with a set identifier.
    pub fn with_set_identifier(mut self, id: impl Into<String>) -> Self {
        self.set_identifier = Some(id.into());
        self
    }
}

impl Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.rtype)?;
        if let Some(id) = &self.set_identifier {
            write!(f, " [{id}]")?;
        }
        Ok(())
    }
}

/// An alias to another resource (Route53 only): the target's hosted zone and
/// name.
/// Source: <https://docs.aws.amazon.com/Route53/latest/APIReference/API_AliasTarget.html>.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasTarget {
    /// Hosted zone of the target (the record's own zone for an alias to a
    /// record in the same zone).
    pub hosted_zone_id: String,
    /// Target name, absolute.
    pub dns_name: String,
    /// Whether Route53 checks the target's health.
    #[serde(default)]
    pub evaluate_target_health: bool,
}

/// Role of a record set in a failover pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum FailoverRole {
    /// Answered while healthy.
    Primary,
    /// Answered when the primary is unhealthy.
    Secondary,
}

/// Routing policy of a record set with a set identifier.
/// Source: <https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/routing-policy.html>.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "lowercase", deny_unknown_fields)]
pub enum Routing {
    /// Weighted: answered in proportion to `weight` (0 to 255).
    Weighted {
        /// Set identifier, unique among the sets of the name and type.
        set_identifier: String,
        /// Relative weight, 0 to 255.
        weight: u8,
    },
    /// Failover: the primary while healthy, else the secondary.
    Failover {
        /// Set identifier.
        set_identifier: String,
        /// Primary or secondary.
        role: FailoverRole,
        /// Health check that decides, for a primary.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        health_check_id: Option<String>,
    },
}

impl Routing {
    /// The set identifier.
    pub fn set_identifier(&self) -> &str {
        match self {
            Routing::Weighted { set_identifier, .. } | Routing::Failover { set_identifier, .. } => {
                set_identifier
            }
        }
    }
}

/// A record set: its key, TTL and values, or an alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSet {
    /// Absolute name with a trailing dot.
    pub name: String,
    /// Record type.
    #[serde(rename = "type")]
    pub rtype: RecordType,
    /// Time to live in seconds; `None` for an alias (Route53 uses the target's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// Values in presentation form; empty for an alias.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Alias target, instead of values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<AliasTarget>,
    /// Weighted or failover routing, with the set identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
}

impl RecordSet {
    /// A simple record set with a TTL and values (normalised; check with
    /// [`RecordSet::validate`]).
    pub fn new<I, S>(name: &str, rtype: RecordType, ttl: u32, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RecordSet {
            name: name.to_string(),
            rtype,
            ttl: Some(ttl),
            values: values.into_iter().map(Into::into).collect(),
            alias: None,
            routing: None,
        }
    }

    /// The same record set with a routing policy.
    pub fn with_routing(mut self, routing: Routing) -> Self {
        self.routing = Some(routing);
        self
    }

    /// The key of this record set.
    pub fn key(&self) -> RecordKey {
        RecordKey {
            name: self.name.clone(),
            rtype: self.rtype,
            set_identifier: self
                .routing
                .as_ref()
                .map(|r| r.set_identifier().to_string()),
        }
    }

    /// Checks the record set and returns it normalised: name lower case and
    /// absolute, addresses canonical, `CNAME` targets absolute.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the field: an invalid name, no value and
    /// no alias, both, a value that does not parse for the type, more than one
    /// `CNAME` value, a TTL above 2147483647 (RFC 2181 section 8).
    pub fn validate(&self) -> Result<RecordSet> {
        let name = normalize_name(&self.name)?;
        let bad = |key: &str, reason: String| Error::InvalidConfig {
            key: key.into(),
            reason: format!("{name} {}: {reason}", self.rtype),
        };
        match (&self.alias, self.values.is_empty()) {
            (Some(_), false) => {
                return Err(bad("record.values", "an alias record has no values".into()))
            }
            (None, true) => {
                return Err(bad(
                    "record.values",
                    "a record set needs at least one value".into(),
                ))
            }
            _ => {}
        }
        if let Some(ttl) = self.ttl {
            if ttl > 2_147_483_647 {
                return Err(bad("record.ttl", format!("TTL {ttl} is above 2147483647")));
            }
        } else if self.alias.is_none() {
            return Err(bad(
                "record.ttl",
                "a record set with values needs a TTL".into(),
            ));
        }
        if self.rtype == RecordType::CNAME && self.values.len() > 1 {
            return Err(bad("record.values", "a CNAME has exactly one value".into()));
        }
        let mut values = Vec::with_capacity(self.values.len());
        for v in &self.values {
            values.push(
                normalize_value(self.rtype, v).map_err(|reason| bad("record.values", reason))?,
            );
        }
        let alias = match &self.alias {
            Some(a) => {
                if a.hosted_zone_id.trim().is_empty() {
                    return Err(bad("record.alias.hosted_zone_id", "empty".into()));
                }
                Some(AliasTarget {
                    hosted_zone_id: a.hosted_zone_id.clone(),
                    dns_name: normalize_name(&a.dns_name)?,
                    evaluate_target_health: a.evaluate_target_health,
                })
            }
            None => None,
        };
        if let Some(r) = &self.routing {
            if r.set_identifier().is_empty() || r.set_identifier().len() > 128 {
                return Err(bad(
                    "record.routing.set_identifier",
                    "must be 1 to 128 characters".into(),
                ));
            }
        }
        Ok(RecordSet {
            name,
            rtype: self.rtype,
            ttl: self.ttl,
            values,
            alias,
            routing: self.routing.clone(),
        })
    }

    /// Whether two record sets hold the same data: type, values (in any
    /// order), alias and routing. TTLs are not compared (RFC 2136
    /// prerequisites cannot compare them).
    pub fn same_data(&self, other: &RecordSet) -> bool {
        let a: BTreeSet<&str> = self.values.iter().map(String::as_str).collect();
        let b: BTreeSet<&str> = other.values.iter().map(String::as_str).collect();
        self.name.eq_ignore_ascii_case(&other.name)
            && self.rtype == other.rtype
            && a == b
            && self.alias == other.alias
            && self.routing == other.routing
    }

    /// `api.example.com. A 60 10.0.0.1,10.0.0.2` for logs and reports.
    pub fn summary(&self) -> String {
        let data = match &self.alias {
            Some(a) => format!("ALIAS {}", a.dns_name),
            None => self.values.join(","),
        };
        match self.ttl {
            Some(ttl) => format!("{} {ttl} {data}", self.key()),
            None => format!("{} {data}", self.key()),
        }
    }
}

/// Normalises a DNS name: lower case, absolute (trailing dot), each label 1 to
/// 63 octets, the whole at most 253 characters without the final dot
/// (RFC 1035 section 2.3.4). A leading `*` label is allowed.
///
/// # Errors
/// [`Error::InvalidConfig`] with key `record.name` naming what is wrong.
pub fn normalize_name(name: &str) -> Result<String> {
    let bad = |reason: &str| Error::InvalidConfig {
        key: "record.name".into(),
        reason: format!("{name:?}: {reason}"),
    };
    let trimmed = name.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(bad("empty name"));
    }
    if trimmed.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    for (i, label) in trimmed.split('.').enumerate() {
        if label.is_empty() {
            return Err(bad("empty label"));
        }
        if label.len() > 63 {
            return Err(bad("a label is longer than 63 characters"));
        }
        if label == "*" && i == 0 {
            continue;
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad(
                "a label has characters other than letters, digits, '-' and '_'",
            ));
        }
    }
    Ok(format!("{}.", trimmed.to_ascii_lowercase()))
}

fn normalize_value(rtype: RecordType, value: &str) -> std::result::Result<String, String> {
    match rtype {
        RecordType::A => value
            .trim()
            .parse::<Ipv4Addr>()
            .map(|a| a.to_string())
            .map_err(|_| format!("{value:?} is not an IPv4 address")),
        RecordType::AAAA => value
            .trim()
            .parse::<Ipv6Addr>()
            .map(|a| a.to_string())
            .map_err(|_| format!("{value:?} is not an IPv6 address")),
        RecordType::CNAME => normalize_name(value).map_err(|e| e.to_string()),
        RecordType::TXT => {
            if value.len() > 4000 {
                Err("a TXT value is longer than 4000 characters".into())
            } else {
                Ok(value.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise() {
        assert_eq!(
            normalize_name("API.Example.com").unwrap(),
            "api.example.com."
        );
        assert_eq!(normalize_name("*.example.com.").unwrap(), "*.example.com.");
        for bad in ["", ".", "a..b", "a b.c", &format!("{}.com", "x".repeat(64))] {
            assert!(
                matches!(normalize_name(bad), Err(Error::InvalidConfig { .. })),
                "{bad:?} is refused"
            );
        }
    }

    #[test]
    fn values_validate_per_type() {
        let r = RecordSet::new("a.example.", RecordType::AAAA, 60, ["2001:DB8:0::1"]);
        assert_eq!(r.validate().unwrap().values, vec!["2001:db8::1"]);
        let r = RecordSet::new(
            "a.example.",
            RecordType::CNAME,
            60,
            ["x.example.", "y.example."],
        );
        assert!(r.validate().is_err(), "two CNAME values refused");
        let r = RecordSet::new("a.example.", RecordType::A, 60, Vec::<String>::new());
        assert!(r.validate().is_err(), "no value refused");
    }

    #[test]
    fn record_type_parses_and_refuses() {
        assert_eq!("aaaa".parse::<RecordType>().unwrap(), RecordType::AAAA);
        let e = "MX".parse::<RecordType>().unwrap_err();
        assert!(e.to_string().contains("MX"), "{e}");
    }
}
