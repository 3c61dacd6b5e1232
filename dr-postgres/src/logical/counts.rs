//! Exact row counts per table.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::error::{Error, Result};

/// Tables whose rows are counted: ordinary tables (`relkind = 'r'`) outside
/// the system schemas. Partitioned parents (`'p'`) hold no rows of their own,
/// so a partitioned table is counted once, through its leaf partitions.
const TABLES: &str = "SELECT format('%I.%I', n.nspname, c.relname) \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind = 'r' \
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
       AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
     ORDER BY 1";

/// Counts the rows of every table (in the caller's transaction, so inside its
/// snapshot when one is open), keyed by the qualified, quoted name
/// (`public.orders`, `"Sales"."Q1 = 2026"`). The key `(large objects)` counts
/// large objects.
///
/// # Errors
/// [`Error::Query`] naming the table whose count failed.
pub async fn count_tables(client: &Client, target: &str) -> Result<BTreeMap<String, i64>> {
    let rows = client
        .query(TABLES, &[])
        .await
        .map_err(|source| Error::Query {
            what: "listing tables".into(),
            target: target.into(),
            source,
        })?;
    let mut counts = BTreeMap::new();
    for row in rows {
        let name: String = row.get(0);
        let n = count_one(client, &name, target).await?;
        counts.insert(name, n);
    }
    let lo: i64 = client
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .map_err(|source| Error::Query {
            what: "counting large objects".into(),
            target: target.into(),
            source,
        })?
        .get(0);
    counts.insert(LARGE_OBJECTS.into(), lo);
    Ok(counts)
}

/// The pseudo-table name under which large objects are counted.
pub(crate) const LARGE_OBJECTS: &str = "(large objects)";

/// Counts one table given by a qualified name as [`count_tables`] writes it.
/// The name is parsed and re-quoted, never pasted into SQL as it came.
pub(crate) async fn count_one(client: &Client, qualified: &str, target: &str) -> Result<i64> {
    let (schema, table) = split_qualified(qualified).ok_or_else(|| Error::InvalidConfig {
        key: "row_counts".into(),
        reason: format!("{qualified:?} is not a qualified table name"),
    })?;
    let sql = format!(
        "SELECT count(*) FROM {}.{}",
        quote_ident(&schema),
        quote_ident(&table)
    );
    let row = client
        .query_one(&sql, &[])
        .await
        .map_err(|source| Error::Query {
            what: format!("counting rows of {qualified}"),
            target: target.into(),
            source,
        })?;
    Ok(row.get(0))
}

/// Quotes an identifier (always with double quotes).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Splits `schema.table` as written by `format('%I.%I')` into the two
/// unquoted names. Returns `None` for anything else.
pub fn split_qualified(s: &str) -> Option<(String, String)> {
    let (schema, rest) = parse_ident(s)?;
    let rest = rest.strip_prefix('.')?;
    let (table, rest) = parse_ident(rest)?;
    rest.is_empty().then_some((schema, table))
}

fn parse_ident(s: &str) -> Option<(String, &str)> {
    if let Some(body) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if body[i + 1..].starts_with('"') {
                    out.push('"');
                    chars.next();
                } else {
                    return (!out.is_empty()).then(|| (out, &body[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        let end = s
            .find(|c: char| {
                !(c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || c == '_'
                    || c == '$'
                    || !c.is_ascii())
            })
            .unwrap_or(s.len());
        let ident = &s[..end];
        let first = ident.chars().next()?;
        (first.is_ascii_lowercase() || first == '_' || !first.is_ascii())
            .then(|| (ident.to_string(), &s[end..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_what_format_i_writes() {
        assert_eq!(
            split_qualified("public.orders"),
            Some(("public".into(), "orders".into()))
        );
        assert_eq!(
            split_qualified(r#""My ""Schema"""."a.b = c""#),
            Some((r#"My "Schema""#.into(), "a.b = c".into()))
        );
        assert_eq!(
            split_qualified("public.\"ünï\""),
            Some(("public".into(), "ünï".into()))
        );
        assert_eq!(split_qualified("public.orders; DROP TABLE x"), None);
        assert_eq!(split_qualified("public"), None);
        assert_eq!(split_qualified("\"unterminated.x"), None);
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
