//! A database's own properties ([`DatabaseProperties`]): read at backup
//! time in the dump's snapshot, planned against the target server before a
//! restore creates anything, applied to the restored database before it is
//! renamed into place, and compared by the restorer's check.
//!
//! `pg_dump` without `--create` (which dr needs, to restore under another
//! name) leaves these out of the dump: the encoding and locale are chosen by
//! `CREATE DATABASE`, the rest by `ALTER DATABASE`, `GRANT ... ON DATABASE`,
//! `COMMENT ON DATABASE` and `ALTER ROLE ... IN DATABASE` (PostgreSQL 15
//! docs, pg_dump `--create`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use tokio_postgres::Client;

use super::counts::quote_ident;
use crate::error::{Error, Result};
use crate::metadata::DatabaseProperties;

/// Reads the properties of database `database` (`None` when there is no
/// such database). Queries only the `pg_database` columns the server has:
/// `datlocprovider` and `daticulocale` from PostgreSQL 15, `daticurules`
/// from 16, `datlocale` (replacing `daticulocale`) from 17. Runs in the
/// caller's transaction, so inside its snapshot when one is open.
///
/// # Errors
/// [`Error::Query`] when a catalog cannot be read.
pub(crate) async fn read(
    client: &Client,
    database: &str,
    target: &str,
) -> Result<Option<DatabaseProperties>> {
    let q = |what: &'static str| {
        let target = target.to_string();
        move |source| Error::Query {
            what: what.into(),
            target,
            source,
        }
    };
    let columns: Vec<String> = client
        .query(
            "SELECT attname::text FROM pg_catalog.pg_attribute \
              WHERE attrelid = 'pg_catalog.pg_database'::regclass AND attnum > 0 AND NOT attisdropped",
            &[],
        )
        .await
        .map_err(q("listing the columns of pg_database"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let has = |c: &str| columns.iter().any(|x| x == c);
    let provider = if has("datlocprovider") {
        "d.datlocprovider::text"
    } else {
        "'c'"
    };
    let locale = if has("datlocale") {
        "d.datlocale::text"
    } else if has("daticulocale") {
        "d.daticulocale::text"
    } else {
        "NULL::text"
    };
    let rules = if has("daticurules") {
        "d.daticurules::text"
    } else {
        "NULL::text"
    };
    let sql = format!(
        "SELECT pg_catalog.pg_encoding_to_char(d.encoding)::text, d.datcollate::text, d.datctype::text, \
                {provider}, {locale}, {rules}, pg_catalog.pg_get_userbyid(d.datdba)::text, \
                d.datconnlimit, d.datallowconn, d.datistemplate, d.datacl::text[], \
                pg_catalog.convert_to(pg_catalog.shobj_description(d.oid, 'pg_database'), \
                                      pg_catalog.current_setting('server_encoding')), d.oid \
           FROM pg_catalog.pg_database d WHERE d.datname = $1"
    );
    let Some(row) = client
        .query_opt(&sql, &[&database])
        .await
        .map_err(q("reading the database's properties"))?
    else {
        return Ok(None);
    };
    let provider: String = row.get(3);
    let oid: u32 = row.get(12);
    let mut props = DatabaseProperties {
        encoding: row.get(0),
        collate: row.get(1),
        ctype: row.get(2),
        locale_provider: provider_name(&provider).to_string(),
        locale: row.get(4),
        icu_rules: row.get(5),
        owner: row.get(6),
        connection_limit: row.get(7),
        allow_connections: row.get(8),
        is_template: row.get(9),
        acl: row.get(10),
        comment: row.get::<_, Option<Vec<u8>>>(11).map(shared_text),
        ..Default::default()
    };
    if props.locale_provider == "libc" {
        props.locale = None;
    }
    let settings = client
        .query(
            "SELECT r.rolname::text, s.setconfig FROM pg_catalog.pg_db_role_setting s \
               LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole \
              WHERE s.setdatabase = $1 ORDER BY 1 NULLS FIRST",
            &[&oid],
        )
        .await
        .map_err(q("reading the database's settings"))?;
    for row in settings {
        let role: Option<String> = row.get(0);
        let config: Vec<String> = row.get::<_, Option<Vec<String>>>(1).unwrap_or_default();
        match role {
            None => props.settings = config,
            Some(role) => {
                props.role_settings.insert(role, config);
            }
        }
    }
    Ok(Some(props))
}

/// Text from a shared catalog as the bytes it holds. A shared catalog
/// keeps each text in the encoding of the session that wrote it, whatever
/// the encoding of the database reading it (PostgreSQL 15 docs §24.3.4:
/// non-ASCII text in shared catalogs is inconsistent across databases of
/// different encodings), so the bytes are read unconverted: UTF-8 when
/// they are (written from a UTF-8 database, the usual case), else Latin-1.
/// Reading the same bytes gives the same text in any database, and a
/// restore writing it through a UTF-8 database gives back UTF-8 bytes.
fn shared_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|e| e.into_bytes().iter().map(|&b| char::from(b)).collect())
}

/// `datlocprovider`'s letter as the name `CREATE DATABASE` takes.
fn provider_name(letter: &str) -> &str {
    match letter {
        "c" => "libc",
        "i" => "icu",
        "b" => "builtin",
        other => other,
    }
}

/// What `CREATE DATABASE` fixes for good: the encoding and the locale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Locale {
    encoding: String,
    collate: String,
    ctype: String,
    provider: String,
    locale: Option<String>,
    icu_rules: Option<String>,
}

impl Locale {
    pub(crate) fn of(p: &DatabaseProperties) -> Self {
        Locale {
            encoding: p.encoding.clone(),
            collate: p.collate.clone(),
            ctype: p.ctype.clone(),
            provider: if p.locale_provider.is_empty() {
                "libc".into()
            } else {
                p.locale_provider.clone()
            },
            locale: p.locale.clone(),
            icu_rules: p.icu_rules.clone(),
        }
    }

    /// The encoding with the `C` locale, which every encoding accepts
    /// (PostgreSQL 15 docs §24.3.1 "Supported Character Sets").
    fn c_with(encoding: &str) -> Self {
        Locale {
            encoding: encoding.into(),
            collate: "C".into(),
            ctype: "C".into(),
            provider: "libc".into(),
            locale: None,
            icu_rules: None,
        }
    }

    /// `CREATE DATABASE name TEMPLATE template0 ...` for a server of major
    /// version `major`; `Err` says why that server cannot make it.
    pub(crate) fn create_sql(&self, name: &str, major: u32) -> std::result::Result<String, String> {
        let mut sql = format!(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            quote_ident(name),
            quote_literal(&self.encoding),
            quote_literal(&self.collate),
            quote_literal(&self.ctype)
        );
        match self.provider.as_str() {
            // From 15 on, template0 may use another provider: say libc.
            "libc" if major >= 15 => sql.push_str(" LOCALE_PROVIDER libc"),
            "libc" => {}
            "icu" if major < 15 => {
                return Err(format!(
                    "the target server (PostgreSQL {major}) has no ICU databases (PostgreSQL 15 and later)"
                ))
            }
            "icu" => {
                sql.push_str(" LOCALE_PROVIDER icu");
                if let Some(l) = &self.locale {
                    sql.push_str(&format!(" ICU_LOCALE {}", quote_literal(l)));
                }
                if let Some(r) = &self.icu_rules {
                    if major < 16 {
                        return Err(format!(
                            "the target server (PostgreSQL {major}) has no ICU rules (PostgreSQL 16 and later)"
                        ));
                    }
                    sql.push_str(&format!(" ICU_RULES {}", quote_literal(r)));
                }
            }
            "builtin" if major < 17 => {
                return Err(format!(
                    "the target server (PostgreSQL {major}) has no builtin locale provider (PostgreSQL 17 and later)"
                ))
            }
            "builtin" => {
                sql.push_str(" LOCALE_PROVIDER builtin");
                if let Some(l) = &self.locale {
                    sql.push_str(&format!(" BUILTIN_LOCALE {}", quote_literal(l)));
                }
            }
            other => return Err(format!("unknown locale provider {other:?}")),
        }
        Ok(sql)
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "encoding {}, LC_COLLATE {}, LC_CTYPE {}",
            self.encoding, self.collate, self.ctype
        )?;
        if self.provider != "libc" {
            write!(f, ", locale provider {}", self.provider)?;
            if let Some(l) = &self.locale {
                write!(f, " locale {l}")?;
            }
            if let Some(r) = &self.icu_rules {
                write!(f, " rules {r:?}")?;
            }
        }
        Ok(())
    }
}

/// A property the target cannot take, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub property: String,
    pub reason: String,
    /// A role is missing (the remedy is the globals or creating it).
    pub missing_role: bool,
}

impl Problem {
    fn new(property: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem {
            property: property.into(),
            reason: reason.into(),
            missing_role: false,
        }
    }

    fn role(property: impl Into<String>, role: &str) -> Self {
        Problem {
            missing_role: true,
            ..Problem::new(
                property,
                format!("role {role:?} does not exist on the target server"),
            )
        }
    }
}

/// The error of a restore refused for `problems`: every property named
/// once, each reason, and what the operator can do.
pub(crate) fn refusal(target: String, problems: &[Problem]) -> Error {
    let mut names: Vec<&str> = Vec::new();
    for p in problems {
        if !names.contains(&p.property.as_str()) {
            names.push(&p.property);
        }
    }
    let mut reason = problems
        .iter()
        .map(|p| format!("{}: {}", p.property, p.reason))
        .collect::<Vec<_>>()
        .join("; ");
    if problems.iter().any(|p| p.missing_role) {
        reason.push_str("; restore with the backup's globals or create the missing roles first");
    }
    reason.push_str(
        "; or pass ignore_database_properties (--ignore-database-properties) to restore without \
         these properties",
    );
    Error::DatabaseProperty {
        target,
        property: names.join(", "),
        reason,
    }
}

/// One `ALTER DATABASE ... SET` (role `None`) or `ALTER ROLE ... IN
/// DATABASE ... SET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Setting {
    role: Option<String>,
    name: String,
    value: String,
}

impl Setting {
    fn parse(role: Option<&str>, entry: &str) -> Option<Self> {
        let (name, value) = entry.split_once('=')?;
        (!name.is_empty()).then(|| Setting {
            role: role.map(str::to_string),
            name: name.to_string(),
            value: value.to_string(),
        })
    }

    fn property(&self) -> String {
        match &self.role {
            None => format!("setting {}", self.name),
            Some(r) => format!("setting {} of role {r}", self.name),
        }
    }

    /// The statement, with the value quoted as pg_dump does
    /// (`makeAlterConfigCommand`): list settings whose elements the server
    /// quotes (`search_path`) are split and each element is a literal.
    fn sql(&self, database: &str) -> String {
        let value = if GUC_LIST_QUOTE.contains(&self.name.to_ascii_lowercase().as_str()) {
            match split_guc_list(&self.value) {
                Some(items) if !items.is_empty() => items
                    .iter()
                    .map(|i| quote_literal(i))
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => quote_literal(&self.value),
            }
        } else {
            quote_literal(&self.value)
        };
        match &self.role {
            None => format!(
                "ALTER DATABASE {} SET {} TO {value}",
                quote_ident(database),
                quote_ident(&self.name)
            ),
            Some(r) => format!(
                "ALTER ROLE {} IN DATABASE {} SET {} TO {value}",
                quote_ident(r),
                quote_ident(database),
                quote_ident(&self.name)
            ),
        }
    }
}

/// The settings whose values are lists of quoted elements (pg_dump's
/// `variable_is_guc_list_quote`, `GUC_LIST_QUOTE` in the server).
const GUC_LIST_QUOTE: &[&str] = &[
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// Splits a list setting as the server's `SplitGUCList` does: elements
/// separated by commas, whitespace around them dropped, double-quoted
/// elements unquoted (`""` is a quote). `None` for malformed text.
fn split_guc_list(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    let skip_ws = |c: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while c.peek().is_some_and(|c| c.is_whitespace()) {
            c.next();
        }
    };
    skip_ws(&mut chars);
    if chars.peek().is_none() {
        return Some(out);
    }
    loop {
        skip_ws(&mut chars);
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        item.push('"');
                    }
                    '"' => break,
                    c => item.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                item.push(c);
                chars.next();
            }
            if item.is_empty() {
                return None;
            }
        }
        out.push(item);
        skip_ws(&mut chars);
        match chars.next() {
            Some(',') => continue,
            None => return Some(out),
            Some(_) => return None,
        }
    }
}

/// One `aclitem` of `datacl`: `grantee=privileges/grantor`, the grantee
/// empty for PUBLIC, `*` after a privilege for the grant option
/// (PostgreSQL 15 docs §5.7 "Privileges", Table 5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AclItem {
    grantee: Option<String>,
    privileges: Vec<(char, bool)>,
    grantor: String,
}

impl AclItem {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (grantee, rest) = acl_name(s)?;
        let rest = rest.strip_prefix('=')?;
        let (privs, grantor) = rest.split_once('/')?;
        let (grantor, tail) = acl_name(grantor)?;
        if !tail.is_empty() || grantor.is_empty() {
            return None;
        }
        let mut privileges: Vec<(char, bool)> = Vec::new();
        for c in privs.chars() {
            if c == '*' {
                privileges.last_mut()?.1 = true;
            } else {
                privileges.push((c, false));
            }
        }
        Some(AclItem {
            grantee: (!grantee.is_empty()).then_some(grantee),
            privileges,
            grantor,
        })
    }

    /// The roles it names.
    fn roles(&self) -> impl Iterator<Item = &str> {
        self.grantee
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(self.grantor.as_str()))
    }

    /// `GRANT` statements giving these privileges on `database`; `Err`
    /// names a privilege letter this code does not know.
    fn grants(&self, database: &str) -> std::result::Result<Vec<String>, char> {
        let grantee = match &self.grantee {
            None => "PUBLIC".to_string(),
            Some(g) => quote_ident(g),
        };
        let mut plain = Vec::new();
        let mut with_option = Vec::new();
        for &(c, option) in &self.privileges {
            let name = match c {
                'C' => "CREATE",
                'T' => "TEMPORARY",
                'c' => "CONNECT",
                other => return Err(other),
            };
            if option {
                with_option.push(name);
            } else {
                plain.push(name);
            }
        }
        let mut out = Vec::new();
        for (privs, suffix) in [(plain, ""), (with_option, " WITH GRANT OPTION")] {
            if !privs.is_empty() {
                out.push(format!(
                    "GRANT {} ON DATABASE {} TO {grantee}{suffix}",
                    privs.join(", "),
                    quote_ident(database)
                ));
            }
        }
        Ok(out)
    }
}

/// A role name in an `aclitem` as the server writes it (`putid`: double
/// quotes around names with anything but letters, digits and `_`, `""` for
/// a quote), and the text after it.
fn acl_name(s: &str) -> Option<(String, &str)> {
    if let Some(body) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if body[i + 1..].starts_with('"') {
                    out.push('"');
                    chars.next();
                } else {
                    return Some((out, &body[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        let end = s.find(['=', '/']).unwrap_or(s.len());
        Some((s[..end].to_string(), &s[end..]))
    }
}

/// What the target server knows, for [`plan`].
#[derive(Debug, Default)]
pub(crate) struct TargetFacts {
    /// The server's major version.
    pub major: u32,
    /// Roles that exist there, or that the backup's globals will create.
    pub roles: BTreeSet<String>,
    /// Names in `pg_settings`, lower case.
    pub settings: BTreeSet<String>,
    /// template0's properties: the server's default locale.
    pub template0: Option<DatabaseProperties>,
}

/// How a restore gives the new database the recorded properties.
#[derive(Debug, Default)]
pub(crate) struct PropertyPlan {
    /// `CREATE DATABASE` locales to try in turn (more than one only when
    /// properties may be dropped); empty: the server's defaults.
    pub creates: Vec<Locale>,
    /// The owner to give it.
    pub owner: Option<String>,
    /// The privileges to set (`None`: leave the defaults).
    pub acl: Option<Vec<AclItem>>,
    /// The owner recorded: grants it made need no other grantor.
    pub recorded_owner: Option<String>,
    /// `datconnlimit` when not -1.
    pub connection_limit: Option<i32>,
    /// `ALLOW_CONNECTIONS false`.
    pub disallow_connections: bool,
    /// `IS_TEMPLATE true`.
    pub is_template: bool,
    /// The comment to set once renamed (`None`: no comment).
    pub comment: Option<String>,
    /// The settings to apply.
    pub settings: Vec<Setting>,
    /// What was dropped already, for the report's warnings.
    pub dropped: Vec<String>,
}

/// Plans the properties of a restored database: `recorded` from the
/// backup (`None` for backups older than the recording), `existing` the
/// pre-created target's. With `no_owner` the owner and the privileges are
/// not applied (pg_restore `--no-owner --no-privileges`), and settings of
/// roles missing on the target are dropped with a warning. With `ignore`
/// every problem becomes a warning and the property is dropped.
///
/// `Err` lists every property the target cannot take.
pub(crate) fn plan(
    recorded: Option<&DatabaseProperties>,
    existing: Option<&DatabaseProperties>,
    facts: &TargetFacts,
    no_owner: bool,
    ignore: bool,
) -> std::result::Result<PropertyPlan, Vec<Problem>> {
    let mut plan = PropertyPlan::default();
    let default_locale = facts.template0.as_ref().map(Locale::of);
    let Some(rec) = recorded else {
        // An older backup: keep a pre-created target's locale, never
        // replace it with the server's default.
        plan.creates
            .extend(existing.map(Locale::of).or(default_locale));
        if existing.is_none() {
            plan.dropped.push(
                "the backup predates dr recording database properties (encoding, locale, owner, \
                 privileges, settings, comment): the database was created with the server's defaults"
                    .into(),
            );
        }
        return Ok(plan);
    };
    let mut problems = Vec::new();
    let wanted = Locale::of(rec);
    match existing.map(Locale::of) {
        Some(have) if have != wanted => {
            problems.push(Problem::new(
                "encoding and locale",
                format!(
                    "the target database exists with {have}, the backup's database had {wanted}; \
                     drop it or restore under another name (with ignore_database_properties the \
                     target's are kept)"
                ),
            ));
            plan.creates.push(have);
        }
        _ => match wanted.create_sql("x", facts.major) {
            Ok(_) => plan.creates.push(wanted.clone()),
            Err(reason) => problems.push(Problem::new(
                "encoding and locale",
                format!("{wanted}: {reason}"),
            )),
        },
    }
    if ignore && existing.is_none() {
        // Keep the encoding (the data's bytes) before the collation.
        let mut fallbacks = Vec::new();
        if let Some(d) = &default_locale {
            fallbacks.push(Locale {
                encoding: wanted.encoding.clone(),
                ..d.clone()
            });
        }
        fallbacks.push(Locale::c_with(&wanted.encoding));
        fallbacks.extend(default_locale.clone());
        for f in fallbacks {
            if !plan.creates.contains(&f) && f.create_sql("x", facts.major).is_ok() {
                plan.creates.push(f);
            }
        }
    }

    let missing = |role: &str| !facts.roles.contains(role);
    if !no_owner {
        plan.recorded_owner = Some(rec.owner.clone());
        if missing(&rec.owner) {
            problems.push(Problem::role("owner", &rec.owner));
        } else {
            plan.owner = Some(rec.owner.clone());
        }
        if let Some(acl) = &rec.acl {
            let mut items = Vec::new();
            for text in acl {
                let Some(item) = AclItem::parse(text) else {
                    problems.push(Problem::new(
                        "privileges",
                        format!("{text:?} is not an aclitem"),
                    ));
                    continue;
                };
                if let Err(c) = item.grants("x") {
                    problems.push(Problem::new(
                        "privileges",
                        format!("{text}: unknown privilege {c:?}"),
                    ));
                    continue;
                }
                let absent = item.roles().find(|r| missing(r)).map(str::to_string);
                match absent {
                    Some(r) => problems.push(Problem {
                        reason: format!("{text}: role {r:?} does not exist on the target server"),
                        ..Problem::role("privileges", &r)
                    }),
                    None => items.push(item),
                }
            }
            plan.acl = Some(items);
        }
    }

    let entries = rec.settings.iter().map(|e| (None, e)).chain(
        rec.role_settings
            .iter()
            .flat_map(|(r, es)| es.iter().map(move |e| (Some(r.as_str()), e))),
    );
    for (role, entry) in entries {
        let Some(s) = Setting::parse(role, entry) else {
            problems.push(Problem::new(
                "settings",
                format!("{entry:?} is not name=value"),
            ));
            continue;
        };
        if let Some(r) = role.filter(|r| missing(r)) {
            if no_owner {
                plan.dropped.push(format!(
                    "database {} dropped: role {r:?} does not exist on the target server",
                    s.property()
                ));
            } else {
                problems.push(Problem::role(s.property(), r));
            }
            continue;
        }
        let name = s.name.to_ascii_lowercase();
        if !name.contains('.') && !facts.settings.contains(&name) {
            problems.push(Problem::new(
                s.property(),
                format!(
                    "the target server (PostgreSQL {}) has no setting {:?}",
                    facts.major, s.name
                ),
            ));
            continue;
        }
        plan.settings.push(s);
    }
    if rec.connection_limit != -1 {
        plan.connection_limit = Some(rec.connection_limit);
    }
    plan.disallow_connections = !rec.allow_connections;
    plan.is_template = rec.is_template;
    plan.comment = rec.comment.clone();

    if problems.is_empty() {
        return Ok(plan);
    }
    if !ignore {
        return Err(problems);
    }
    for p in problems {
        plan.dropped
            .push(format!("database {} dropped: {}", p.property, p.reason));
    }
    Ok(plan)
}

/// Applies a plan's owner, connection limit, privileges, settings and
/// flags to database `name` (not yet renamed into place). Each property is
/// one implicit transaction; one the server refuses is an error naming it,
/// or with `ignore` a warning.
///
/// # Errors
/// [`Error::DatabaseProperty`] naming the property the server refused.
pub(crate) async fn apply(
    admin: &Client,
    name: &str,
    target: &str,
    plan: &PropertyPlan,
    ignore: bool,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let db = quote_ident(name);
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(owner) = &plan.owner {
        steps.push((
            "owner".into(),
            vec![format!(
                "ALTER DATABASE {db} OWNER TO {}",
                quote_ident(owner)
            )],
        ));
    }
    if let Some(n) = plan.connection_limit {
        steps.push((
            "connection limit".into(),
            vec![format!("ALTER DATABASE {db} CONNECTION LIMIT {n}")],
        ));
    }
    if let Some(items) = &plan.acl {
        let owner: String = admin
            .query_one(
                "SELECT pg_catalog.pg_get_userbyid(datdba)::text FROM pg_catalog.pg_database WHERE datname = $1",
                &[&name],
            )
            .await
            .map_err(|source| Error::Query {
                what: format!("reading the owner of {name}"),
                target: target.into(),
                source,
            })?
            .get(0);
        let mut sql = vec![
            format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"),
            format!("REVOKE ALL ON DATABASE {db} FROM {}", quote_ident(&owner)),
        ];
        for item in items {
            let grants = item.grants(name).unwrap_or_default();
            let by_owner = plan.recorded_owner.as_deref() == Some(item.grantor.as_str())
                || item.grantor == owner;
            if by_owner {
                sql.extend(grants);
            } else {
                sql.push(format!(
                    "SET SESSION AUTHORIZATION {}",
                    quote_ident(&item.grantor)
                ));
                sql.extend(grants);
                sql.push("RESET SESSION AUTHORIZATION".into());
            }
        }
        steps.push(("privileges".into(), sql));
    }
    for s in &plan.settings {
        steps.push((s.property(), vec![s.sql(name)]));
    }
    if plan.is_template {
        steps.push((
            "template flag".into(),
            vec![format!("ALTER DATABASE {db} IS_TEMPLATE true")],
        ));
    }
    if plan.disallow_connections {
        steps.push((
            "allow connections".into(),
            vec![format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false")],
        ));
    }
    for (property, sql) in steps {
        // Several statements in one simple query run as one transaction: a
        // failure leaves none of them (nor a SET SESSION AUTHORIZATION).
        if let Err(e) = admin.batch_execute(&sql.join(";\n")).await {
            let reason = format!("the target server refused it: {}", db_message(&e));
            if ignore {
                warnings.push(format!("database {property} dropped: {reason}"));
                continue;
            }
            return Err(Error::DatabaseProperty {
                target: target.into(),
                property,
                reason,
            });
        }
    }
    Ok(())
}

/// The server's message of a failed query (the driver's `Display` says
/// only "db error").
pub(crate) fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => match d.detail() {
            Some(detail) => format!("{} ({detail})", d.message()),
            None => d.message().to_string(),
        },
        None => e.to_string(),
    }
}

/// Whether `CREATE DATABASE` failed because of the encoding or locale
/// asked for (an unknown or unsupported locale, an encoding the locale
/// does not fit), rather than privileges or the server's state.
pub(crate) fn is_locale_error(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        [
            SqlState::INVALID_PARAMETER_VALUE,
            SqlState::WRONG_OBJECT_TYPE,
            SqlState::FEATURE_NOT_SUPPORTED,
            SqlState::UNDEFINED_OBJECT,
            SqlState::INVALID_NAME,
        ]
        .contains(c)
    })
}

/// Compares recorded properties with a restored database's, as checks
/// named `database <property>`. With `no_owner` the owner and the
/// privileges are not compared, nor settings of roles missing on the
/// target (`roles`).
pub(crate) fn compare(
    recorded: &DatabaseProperties,
    actual: &DatabaseProperties,
    no_owner: bool,
    roles: &BTreeSet<String>,
) -> Vec<dr_core::Check> {
    let mut checks = Vec::new();
    let mut push = |name: &str, expected: String, actual: String| {
        checks.push(dr_core::Check {
            name: format!("database {name}"),
            expected,
            actual,
        })
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
    push(
        "encoding",
        recorded.encoding.clone(),
        actual.encoding.clone(),
    );
    push(
        "LC_COLLATE",
        recorded.collate.clone(),
        actual.collate.clone(),
    );
    push("LC_CTYPE", recorded.ctype.clone(), actual.ctype.clone());
    let provider = |p: &DatabaseProperties| Locale::of(p).provider;
    push("locale provider", provider(recorded), provider(actual));
    if recorded.locale.is_some() || actual.locale.is_some() {
        push("locale", opt(&recorded.locale), opt(&actual.locale));
    }
    if recorded.icu_rules.is_some() || actual.icu_rules.is_some() {
        push(
            "ICU rules",
            opt(&recorded.icu_rules),
            opt(&actual.icu_rules),
        );
    }
    if !no_owner {
        push("owner", recorded.owner.clone(), actual.owner.clone());
        let acl = |a: &Option<Vec<String>>| match a {
            None => "(default)".to_string(),
            Some(items) => {
                let mut items = items.clone();
                items.sort();
                items.join(" ")
            }
        };
        push("privileges", acl(&recorded.acl), acl(&actual.acl));
    }
    push(
        "connection limit",
        recorded.connection_limit.to_string(),
        actual.connection_limit.to_string(),
    );
    push(
        "allows connections",
        recorded.allow_connections.to_string(),
        actual.allow_connections.to_string(),
    );
    push(
        "is template",
        recorded.is_template.to_string(),
        actual.is_template.to_string(),
    );
    push("comment", opt(&recorded.comment), opt(&actual.comment));
    let list = |v: Option<&Vec<String>>| {
        let mut v = v.cloned().unwrap_or_default();
        v.sort();
        if v.is_empty() {
            "(none)".to_string()
        } else {
            v.join("; ")
        }
    };
    push(
        "settings",
        list(Some(&recorded.settings)),
        list(Some(&actual.settings)),
    );
    let mut role_names: BTreeMap<&String, ()> = BTreeMap::new();
    for r in recorded
        .role_settings
        .keys()
        .chain(actual.role_settings.keys())
    {
        role_names.insert(r, ());
    }
    for role in role_names.keys() {
        if no_owner && !roles.contains(role.as_str()) {
            continue;
        }
        push(
            &format!("settings of role {role}"),
            list(recorded.role_settings.get(*role)),
            list(actual.role_settings.get(*role)),
        );
    }
    checks
}

/// The roles a `pg_dumpall --globals-only` script creates (its `CREATE
/// ROLE name;` lines).
pub(crate) fn roles_created_by(globals_sql: &str) -> BTreeSet<String> {
    globals_sql
        .lines()
        .filter_map(|l| l.strip_prefix("CREATE ROLE ")?.strip_suffix(';'))
        .filter_map(|name| match name.strip_prefix('"') {
            Some(_) => {
                let (n, rest) = acl_name(name)?;
                rest.is_empty().then_some(n)
            }
            None => Some(name.to_string()),
        })
        .collect()
}

/// A SQL string literal (`standard_conforming_strings` is on by default
/// since PostgreSQL 9.1: only `'` needs doubling).
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

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

    fn latin1() -> DatabaseProperties {
        DatabaseProperties {
            encoding: "LATIN1".into(),
            collate: "C".into(),
            ctype: "C".into(),
            locale_provider: "libc".into(),
            owner: "dr app".into(),
            connection_limit: 17,
            allow_connections: true,
            acl: Some(vec![
                "=T/\"dr app\"".into(),
                "\"dr app\"=CTc*/\"dr app\"".into(),
                "reader=c/\"dr app\"".into(),
            ]),
            comment: Some("Legacy ü".into()),
            settings: vec![
                "work_mem=7MB".into(),
                r#"search_path="$user", public, "odd, ""schema""""#.into(),
            ],
            role_settings: [("reader".to_string(), vec!["statement_timeout=42s".into()])]
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    fn facts(roles: &[&str]) -> TargetFacts {
        TargetFacts {
            major: 15,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            settings: ["work_mem", "search_path", "statement_timeout"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            template0: Some(DatabaseProperties {
                encoding: "UTF8".into(),
                collate: "C.UTF-8".into(),
                ctype: "C.UTF-8".into(),
                locale_provider: "libc".into(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn create_statements_follow_the_server_version() {
        let mut p = latin1();
        let l = Locale::of(&p);
        assert_eq!(
            l.create_sql("a\"b", 14).unwrap(),
            r#"CREATE DATABASE "a""b" TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'"#
        );
        assert!(l
            .create_sql("x", 15)
            .unwrap()
            .ends_with("LOCALE_PROVIDER libc"));
        p.locale_provider = "icu".into();
        p.locale = Some("de-DE".into());
        let icu = Locale::of(&p);
        assert!(icu
            .create_sql("x", 14)
            .unwrap_err()
            .contains("PostgreSQL 14"));
        assert!(icu
            .create_sql("x", 15)
            .unwrap()
            .ends_with("LOCALE_PROVIDER icu ICU_LOCALE 'de-DE'"));
        p.icu_rules = Some("&a < b".into());
        assert!(Locale::of(&p).create_sql("x", 15).is_err());
        assert!(Locale::of(&p)
            .create_sql("x", 16)
            .unwrap()
            .ends_with("ICU_RULES '&a < b'"));
        p.locale_provider = "builtin".into();
        p.locale = Some("C.UTF-8".into());
        assert!(Locale::of(&p).create_sql("x", 16).is_err());
        assert!(Locale::of(&p)
            .create_sql("x", 17)
            .unwrap()
            .ends_with("LOCALE_PROVIDER builtin BUILTIN_LOCALE 'C.UTF-8'"));
    }

    #[test]
    fn acl_items_parse_and_become_grants() {
        let item = AclItem::parse("\"dr app\"=CTc*/\"dr app\"").unwrap();
        assert_eq!(item.grantee.as_deref(), Some("dr app"));
        assert_eq!(item.grantor, "dr app");
        assert_eq!(
            item.grants("d").unwrap(),
            vec![
                r#"GRANT CREATE, TEMPORARY ON DATABASE "d" TO "dr app""#.to_string(),
                r#"GRANT CONNECT ON DATABASE "d" TO "dr app" WITH GRANT OPTION"#.to_string()
            ]
        );
        let public = AclItem::parse("=Tc/postgres").unwrap();
        assert_eq!(public.grantee, None);
        assert_eq!(
            public.grants("d").unwrap(),
            vec![r#"GRANT TEMPORARY, CONNECT ON DATABASE "d" TO PUBLIC"#.to_string()]
        );
        let quoted = AclItem::parse(r#""a""b=c"=c/"x/y""#).unwrap();
        assert_eq!(quoted.grantee.as_deref(), Some("a\"b=c"));
        assert_eq!(quoted.grantor, "x/y");
        assert_eq!(AclItem::parse("nograntor=c"), None);
        assert_eq!(AclItem::parse("r=X/o").unwrap().grants("d"), Err('X'));
    }

    #[test]
    fn list_settings_are_split_as_the_server_does() {
        assert_eq!(
            split_guc_list(r#""$user", public, "odd, ""schema""""#).unwrap(),
            vec!["$user", "public", "odd, \"schema\""]
        );
        assert_eq!(split_guc_list("").unwrap(), Vec::<String>::new());
        assert_eq!(split_guc_list(r#""""#).unwrap(), vec![""]);
        assert_eq!(split_guc_list("a,,b"), None);
        let s = Setting::parse(None, r#"search_path="$user", public"#).unwrap();
        assert_eq!(
            s.sql("d"),
            r#"ALTER DATABASE "d" SET "search_path" TO '$user', 'public'"#
        );
        let s = Setting::parse(Some("r"), "statement_timeout=42s").unwrap();
        assert_eq!(
            s.sql("d"),
            r#"ALTER ROLE "r" IN DATABASE "d" SET "statement_timeout" TO '42s'"#
        );
    }

    #[test]
    fn a_plan_refuses_what_the_target_cannot_take_unless_ignoring() {
        let rec = latin1();
        let problems = plan(Some(&rec), None, &facts(&["postgres"]), false, false).unwrap_err();
        let names: Vec<_> = problems.iter().map(|p| p.property.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "owner",
                "privileges",
                "privileges",
                "privileges",
                "setting statement_timeout of role reader"
            ]
        );
        assert!(problems[0].reason.contains("\"dr app\" does not exist"));

        let ok = plan(
            Some(&rec),
            None,
            &facts(&["dr app", "reader"]),
            false,
            false,
        )
        .unwrap();
        assert_eq!(ok.creates, vec![Locale::of(&rec)]);
        assert_eq!(ok.owner.as_deref(), Some("dr app"));
        assert_eq!(ok.acl.as_ref().unwrap().len(), 3);
        assert_eq!(ok.settings.len(), 3);
        assert_eq!(ok.connection_limit, Some(17));
        assert!(ok.dropped.is_empty());

        let loose = plan(Some(&rec), None, &facts(&["postgres"]), false, true).unwrap();
        assert_eq!(loose.owner, None);
        assert_eq!(loose.acl.as_ref().unwrap().len(), 0);
        assert_eq!(loose.dropped.len(), 5);
        // The encoding is kept before the locale when falling back.
        assert_eq!(loose.creates[0], Locale::of(&rec));
        assert_eq!(loose.creates[1].encoding, "LATIN1");
        assert_eq!(loose.creates[1].collate, "C.UTF-8");
        assert_eq!(loose.creates.last().unwrap().encoding, "UTF8");

        // Scratch restores without globals: no owner, no privileges, the
        // missing role's setting dropped with a warning.
        let scratch = plan(Some(&rec), None, &facts(&["postgres"]), true, false).unwrap();
        assert_eq!(scratch.owner, None);
        assert!(scratch.acl.is_none());
        assert_eq!(scratch.dropped.len(), 1);

        // A setting the target does not know.
        let mut odd = rec.clone();
        odd.settings.push("no_such_thing=1".into());
        odd.settings.push("my.custom=1".into());
        let problems = plan(
            Some(&odd),
            None,
            &facts(&["dr app", "reader"]),
            false,
            false,
        )
        .unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].property, "setting no_such_thing");
    }

    #[test]
    fn a_pre_created_target_must_match_the_encoding_and_locale() {
        let rec = latin1();
        let f = facts(&["dr app", "reader"]);
        let utf8 = f.template0.clone().unwrap();
        let problems = plan(Some(&rec), Some(&utf8), &f, false, false).unwrap_err();
        assert_eq!(problems[0].property, "encoding and locale");
        assert!(
            problems[0].reason.contains("encoding UTF8"),
            "{}",
            problems[0].reason
        );
        let kept = plan(Some(&rec), Some(&utf8), &f, false, true).unwrap();
        assert_eq!(kept.creates, vec![Locale::of(&utf8)]);
        let same = plan(Some(&rec), Some(&rec), &f, false, false).unwrap();
        assert_eq!(same.creates, vec![Locale::of(&rec)]);
        // An older backup keeps the pre-created target's locale.
        let old = plan(None, Some(&rec), &f, false, false).unwrap();
        assert_eq!(old.creates, vec![Locale::of(&rec)]);
        assert!(old.dropped.is_empty());
        let old = plan(None, None, &f, false, false).unwrap();
        assert_eq!(old.creates, vec![Locale::of(&utf8)]);
        assert_eq!(old.dropped.len(), 1);
    }

    #[test]
    fn comparison_skips_owner_and_privileges_without_them() {
        let rec = latin1();
        let mut got = rec.clone();
        got.owner = "postgres".into();
        got.acl = None;
        got.role_settings.clear();
        let checks = compare(&rec, &got, false, &BTreeSet::new());
        let failed: Vec<_> = checks
            .iter()
            .filter(|c| !c.ok())
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            failed,
            vec![
                "database owner",
                "database privileges",
                "database settings of role reader"
            ]
        );
        let checks = compare(&rec, &got, true, &BTreeSet::new());
        assert!(checks.iter().all(|c| c.ok()), "{checks:?}");
        assert!(checks
            .iter()
            .any(|c| c.name == "database encoding" && c.expected == "LATIN1"));
    }

    #[test]
    fn shared_catalog_text_is_read_from_its_bytes() {
        assert_eq!(shared_text("Légacy ß".as_bytes().to_vec()), "Légacy ß");
        assert_eq!(shared_text(vec![b'L', 0xe9, b'g']), "Lég");
    }

    #[test]
    fn globals_roles_and_dbname_conninfo() {
        let sql = "SET x = 1;\nCREATE ROLE \"dr app\";\nALTER ROLE \"dr app\" WITH LOGIN;\nCREATE ROLE postgres;\n";
        let roles = roles_created_by(sql);
        assert!(roles.contains("dr app") && roles.contains("postgres"));
        assert_eq!(roles.len(), 2);
        assert_eq!(dbname_conninfo("a=b"), "dbname='a=b'");
        assert_eq!(dbname_conninfo(r"it's\x"), r"dbname='it\'s\\x'");
    }
}
