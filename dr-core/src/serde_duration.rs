//! `Duration` in configuration, plan parameters and reports: one parser and
//! three serde adapters for every crate of `dr`.
//!
//! - [`human`]: a required humantime string (`"90s"`, `"5m"`, `"1h 30m"`,
//!   `"7d"`), as `dr.toml` and plan files write durations.
//! - [`human_option`]: the same for an `Option<Duration>`; an absent key (with
//!   `#[serde(default)]`) or `null` is `None`.
//! - [`secs`]: seconds as a JSON number (`1.5`), rounded to the millisecond,
//!   for reports that scripts read.
//!
//! The syntax is humantime's
//! (<https://docs.rs/humantime/latest/humantime/fn.parse_duration.html>).
//! A value that does not parse is an error that quotes it, so a typo in a
//! config file can be found (`"soon" is not a duration (...)`).
//!
//! ```
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Options {
//!     #[serde(with = "dr_core::serde_duration::human")]
//!     wait: Duration,
//!     #[serde(default, with = "dr_core::serde_duration::human_option")]
//!     grace: Option<Duration>,
//! }
//!
//! let o: Options = toml::from_str("wait = \"5m\"").unwrap();
//! assert_eq!(o.wait, Duration::from_secs(300));
//! assert_eq!(o.grace, None);
//! let e = toml::from_str::<Options>("wait = \"soon\"").err().unwrap();
//! assert!(e.to_string().contains("\"soon\""));
//! ```

use std::time::Duration;

/// Parses a humantime duration (`"90s"`, `"5m"`, `"1h 30m"`, `"7d"`).
///
/// # Errors
/// A message that quotes `text`, says why it does not parse and gives
/// examples: `"soon" is not a duration (expected number at 0); write e.g.
/// "90s", "5m", "1h 30m"`. Callers put it in their own error with the key.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| {
        format!("{text:?} is not a duration ({e}); write e.g. \"90s\", \"5m\", \"1h 30m\"")
    })
}

/// `d` as humantime writes it (`"5m"`, `"1h 30m"`), the form [`parse`] reads.
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A required `Duration` as a humantime string: `#[serde(with =
/// "dr_core::serde_duration::human")]`.
pub mod human {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as a humantime string (`"5m"`).
    ///
    /// # Errors
    /// Those of the serializer.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }

    /// Reads a humantime string.
    ///
    /// # Errors
    /// A value that is not a string, or a string that is not a duration (the
    /// message quotes it, see [`super::parse`]).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An optional `Duration` as a humantime string: `#[serde(default, with =
/// "dr_core::serde_duration::human_option")]`. `None` is written as `null`
/// (add `skip_serializing_if = "Option::is_none"` for TOML); an absent key
/// or `null` reads as `None`.
pub mod human_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some(d)` as a humantime string, `None` as none.
    ///
    /// # Errors
    /// Those of the serializer.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::human::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Reads a humantime string or `null`.
    ///
    /// # Errors
    /// A string that is not a duration (the message quotes it).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| super::parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A `Duration` as fractional seconds (`1.5`), rounded to the millisecond
/// when written: `#[serde(with = "dr_core::serde_duration::secs")]`. For
/// reports and machine-written options.
pub mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` in seconds, rounded to the millisecond.
    ///
    /// # Errors
    /// Those of the serializer.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
    }

    /// Reads a number of seconds (integer or fractional).
    ///
    /// # Errors
    /// A value that is not a number, or a negative, infinite or too large
    /// one (the message quotes it).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(|e| {
            serde::de::Error::custom(format!("{secs} is not a duration in seconds ({e})"))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Config {
        #[serde(with = "super::human")]
        wait: Duration,
        #[serde(
            default,
            with = "super::human_option",
            skip_serializing_if = "Option::is_none"
        )]
        grace: Option<Duration>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Report {
        #[serde(with = "super::secs")]
        took: Duration,
    }

    #[test]
    fn human_strings_round_trip() {
        let c: Config = toml::from_str("wait = \"1h 30m\"\ngrace = \"7d\"\n").unwrap();
        assert_eq!(c.wait, Duration::from_secs(5400));
        assert_eq!(c.grace, Some(Duration::from_secs(7 * 86400)));
        let text = toml::to_string(&c).unwrap();
        assert_eq!(text, "wait = \"1h 30m\"\ngrace = \"7days\"\n");
        assert_eq!(toml::from_str::<Config>(&text).unwrap(), c);
    }

    #[test]
    fn an_absent_or_null_option_is_none() {
        let c: Config = toml::from_str("wait = \"5m\"").unwrap();
        assert_eq!(c.grace, None);
        let c: Config = serde_json::from_str(r#"{"wait": "5m", "grace": null}"#).unwrap();
        assert_eq!(c.grace, None);
        assert_eq!(toml::to_string(&c).unwrap(), "wait = \"5m\"\n");
    }

    #[test]
    fn a_bad_value_is_named_in_the_error() {
        let e = toml::from_str::<Config>("wait = \"soon\"").unwrap_err();
        assert!(e.to_string().contains("\"soon\" is not a duration"), "{e}");
        let e = toml::from_str::<Config>("wait = \"5m\"\ngrace = \"later\"").unwrap_err();
        assert!(e.to_string().contains("\"later\" is not a duration"), "{e}");
        let e = serde_json::from_str::<Report>(r#"{"took": -2.5}"#).unwrap_err();
        assert!(e.to_string().contains("-2.5"), "{e}");
        let e = super::parse("10 parsecs").unwrap_err();
        assert!(e.starts_with("\"10 parsecs\" is not a duration ("), "{e}");
    }

    #[test]
    fn seconds_round_trip_to_the_millisecond() {
        let r = Report {
            took: Duration::from_millis(1500),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"took":1.5}"#);
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
        let r: Report = serde_json::from_str(r#"{"took": 2}"#).unwrap();
        assert_eq!(r.took, Duration::from_secs(2));
        let fine = Report {
            took: Duration::from_micros(1_234_567),
        };
        let back: Report = serde_json::from_str(&serde_json::to_string(&fine).unwrap()).unwrap();
        assert_eq!(back.took, Duration::from_millis(1235));
    }
}
