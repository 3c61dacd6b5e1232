//! A database's own properties.

/// A libpq connection string naming only the database (`dbname='...'`,
/// PostgreSQL 15 docs §34.1.1.1: `\` and `'` escaped by a backslash). The
/// client programs read a `--dbname` holding `=` as a connection string,
/// so a database called `a=b` must be passed this way; host, port and user
/// still come from their own options.
pub(crate) fn dbname_conninfo(name: &str) -> String {
    format!(
        "dbname='{}'",
        name.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbname_conninfo_quotes() {
        assert_eq!(dbname_conninfo("a=b"), "dbname='a=b'");
        assert_eq!(dbname_conninfo(r"it's\x"), r"dbname='it\'s\\x'");
    }
}
