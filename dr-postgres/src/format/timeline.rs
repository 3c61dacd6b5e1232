//! Timeline history files (PostgreSQL 15 docs §26.3.5 "Timelines"): the
//! file `<tli>.history` of timeline `tli` lists, one line per ancestor,
//! `<parent tli>\t<switch point LSN>\t<reason>`; the parent timeline ended
//! (and `tli`'s next ancestor began) at the switch point.

use super::error::FormatError;
use super::names::Lsn;

/// One ancestor of a timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The ancestor timeline.
    pub timeline: u32,
    /// Where it ended.
    pub switch_point: Lsn,
    /// The reason PostgreSQL wrote.
    pub reason: String,
}

/// The parsed history of one timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The timeline this history belongs to.
    pub timeline: u32,
    /// Its ancestors, oldest first.
    pub entries: Vec<HistoryEntry>,
}

impl History {
    /// The history of timeline 1 (no file, no ancestors).
    pub fn first() -> Self {
        History {
            timeline: 1,
            entries: Vec::new(),
        }
    }

    /// Parses the text of `<timeline>.history`.
    ///
    /// # Errors
    /// [`FormatError::InvalidInput`] naming the line that does not parse.
    pub fn parse(timeline: u32, text: &str) -> Result<Self, FormatError> {
        let mut entries = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| FormatError::InvalidInput {
                what: format!("line of {timeline:08X}.history"),
                value: line.to_string(),
                reason: reason.into(),
            };
            let mut fields = line.splitn(3, '\t');
            let tli: u32 = fields
                .next()
                .and_then(|f| f.trim().parse().ok())
                .ok_or_else(|| bad("the parent timeline is not a number"))?;
            let switch_point: Lsn = fields
                .next()
                .ok_or_else(|| bad("no switch point"))?
                .parse()
                .map_err(|_| bad("the switch point is not an LSN"))?;
            if entries
                .last()
                .is_some_and(|e: &HistoryEntry| e.timeline >= tli)
            {
                return Err(bad("timelines must increase"));
            }
            entries.push(HistoryEntry {
                timeline: tli,
                switch_point,
                reason: fields.next().unwrap_or_default().trim().to_string(),
            });
        }
        Ok(History { timeline, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ancestry() {
        let h = History::parse(
            3,
            "1\t0/3000198\tno recovery target specified\n\n2\t0/5000000\tbefore 2026-01-01 00:00:00+00\n",
        )
        .unwrap();
        assert_eq!(h.entries.len(), 2);
        assert_eq!(h.entries[1].switch_point, Lsn(0x500_0000));
        assert!(History::parse(2, "x\t0/1\n").is_err());
        assert!(History::parse(2, "1\tnot-an-lsn\n").is_err());
    }
}
