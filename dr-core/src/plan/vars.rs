//! `${name}` substitution in step parameters.
//!
//! A reference is `${name}` where name is a declared variable, a built-in
//! (`run_id`, `plan`) or the output of an earlier step
//! (`steps.<step>.summary`, `steps.<step>.state.<key>[.<key>...]`). `$${`
//! writes a literal `${`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::ActionOutput;

/// The built-in variables.
pub(crate) const BUILTINS: [&str; 2] = ["run_id", "plan"];

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ref {
    /// A declared or built-in variable.
    Var(String),
    /// `steps.<step>.<path...>`.
    Step { step: String, path: Vec<String> },
}

impl Ref {
    fn parse(name: &str) -> Result<Ref, String> {
        if name.is_empty() {
            return Err("empty reference ${}".into());
        }
        if let Some(rest) = name.strip_prefix("steps.") {
            let mut parts = rest.split('.');
            let step = parts.next().unwrap_or_default().to_string();
            let path: Vec<String> = parts.map(str::to_string).collect();
            let valid = !step.is_empty()
                && match path.first().map(String::as_str) {
                    Some("summary") => path.len() == 1,
                    Some("state") => path.iter().all(|p| !p.is_empty()),
                    _ => false,
                };
            if !valid {
                return Err(format!(
                    "bad step reference ${{{name}}}: use ${{steps.<step>.summary}} or ${{steps.<step>.state.<key>}}"
                ));
            }
            return Ok(Ref::Step { step, path });
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "bad variable name ${{{name}}}: use letters, digits and _"
            ));
        }
        Ok(Ref::Var(name.to_string()))
    }
}

/// Splits `s` into literal text and references, or says what is malformed.
fn scan(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    let mut literal = String::new();
    while let Some(i) = rest.find('$') {
        literal.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            literal.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            if !literal.is_empty() {
                out.push(Piece::Text(std::mem::take(&mut literal)));
            }
            out.push(Piece::Ref(Ref::parse(&tail[..end])?, &tail[..end]));
            rest = &tail[end + 1..];
        } else {
            literal.push('$');
            rest = &after[1..];
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        out.push(Piece::Text(literal));
    }
    Ok(out)
}

enum Piece<'a> {
    Text(String),
    Ref(Ref, &'a str),
}

/// Every reference in `v`'s strings, with the parameter path it sits at.
pub(crate) fn references(v: &Value, path: &str, out: &mut Vec<(String, Result<Ref, String>)>) {
    match v {
        Value::String(s) => match scan(s) {
            Ok(pieces) => {
                for p in pieces {
                    if let Piece::Ref(r, _) = p {
                        out.push((path.to_string(), Ok(r)));
                    }
                }
            }
            Err(e) => out.push((path.to_string(), Err(e))),
        },
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                references(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                references(item, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// What references resolve to.
pub(crate) struct Scope<'a> {
    /// Variables (declared and built-in) by name.
    pub vars: &'a BTreeMap<String, String>,
    /// Outputs of completed steps; `None` at check time, when step references
    /// become placeholders.
    pub outputs: Option<&'a BTreeMap<String, ActionOutput>>,
}

impl Scope<'_> {
    fn lookup(&self, r: &Ref, raw: &str) -> Result<String, String> {
        match r {
            Ref::Var(name) => self
                .vars
                .get(name)
                .cloned()
                .ok_or_else(|| format!("unknown variable ${{{name}}}")),
            Ref::Step { step, path } => {
                let Some(outputs) = self.outputs else {
                    return Ok(format!("<{raw}>"));
                };
                let out = outputs.get(step).ok_or_else(|| {
                    format!("${{{raw}}}: step {step:?} has no output (not completed)")
                })?;
                if path[0] == "summary" {
                    return Ok(out.summary.clone());
                }
                let mut v = &out.state;
                for key in &path[1..] {
                    v = match v {
                        Value::Object(m) => m.get(key),
                        Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
                        _ => None,
                    }
                    .ok_or_else(|| format!("${{{raw}}}: step {step:?} returned no {key:?}"))?;
                }
                Ok(match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            }
        }
    }

    /// `v` with every reference replaced. The error names the parameter path.
    pub fn substitute(&self, v: &Value, path: &str) -> Result<Value, (String, String)> {
        Ok(match v {
            Value::String(s) => {
                let pieces = scan(s).map_err(|e| (path.to_string(), e))?;
                let mut text = String::new();
                for p in pieces {
                    match p {
                        Piece::Text(t) => text.push_str(&t),
                        Piece::Ref(r, raw) => {
                            text.push_str(&self.lookup(&r, raw).map_err(|e| (path.to_string(), e))?)
                        }
                    }
                }
                Value::String(text)
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.substitute(item, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, item)| {
                        Ok::<_, (String, String)>((
                            k.clone(),
                            self.substitute(item, &format!("{path}.{k}"))?,
                        ))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => other.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn substitutes_variables_steps_and_escapes() {
        let vars = BTreeMap::from([("t".to_string(), "2024-01-01".to_string())]);
        let outputs = BTreeMap::from([(
            "restore".to_string(),
            ActionOutput {
                summary: "restored".into(),
                state: json!({"dsn": "host=x", "port": 5433, "list": ["a", "b"]}),
                log: String::new(),
            },
        )]);
        let scope = Scope {
            vars: &vars,
            outputs: Some(&outputs),
        };
        let v = json!({
            "a": "at ${t}!",
            "b": ["${steps.restore.state.dsn} ${steps.restore.state.port}"],
            "c": "$${t} costs $5",
            "d": "${steps.restore.state.list.1}/${steps.restore.summary}",
            "n": 3
        });
        let got = scope.substitute(&v, "params").unwrap();
        assert_eq!(
            got,
            json!({"a": "at 2024-01-01!", "b": ["host=x 5433"], "c": "${t} costs $5", "d": "b/restored", "n": 3})
        );
    }

    #[test]
    fn errors_name_the_parameter() {
        let vars = BTreeMap::new();
        let scope = Scope {
            vars: &vars,
            outputs: None,
        };
        let (path, msg) = scope
            .substitute(&json!({"x": ["ok", "${nope}"]}), "params")
            .unwrap_err();
        assert_eq!(path, "params.x[1]");
        assert!(msg.contains("nope"), "{msg}");
        let (_, msg) = scope
            .substitute(&json!("${unclosed"), "params")
            .unwrap_err();
        assert!(msg.contains("unclosed"), "{msg}");
        let (_, msg) = scope
            .substitute(&json!("${steps.x.bogus}"), "params")
            .unwrap_err();
        assert!(msg.contains("bad step reference"), "{msg}");
        // At check time step references become placeholders.
        assert_eq!(
            scope.substitute(&json!("${steps.a.state.k}"), "p").unwrap(),
            json!("<steps.a.state.k>")
        );
    }
}
