//! `exec`: runs a program.
//!
//! - Changes: whatever the program does. No rollback of its own: give the step
//!   `rollback = { action = "exec", params = { argv = [...] } }`.
//! - The program runs directly from `argv`, without a shell, unless
//!   `shell = true` (then `argv` is one script run by `sh -c`).
//! - stdout and stderr are captured, bounded (head and tail kept); stdout's
//!   (bounded) text is in the output state as `stdout`, for later steps
//!   (`${steps.<step>.state.stdout}`).
//! - Environment values are passed to the program but never shown in
//!   descriptions or logs (only the names).
//! - When the step times out, the program is killed.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Error, Result};
use crate::plan::output::BoundedBuffer;
use crate::plan::{Action, ActionContext, ActionOutput, ActionRegistry, Preflight};

const NAME: &str = "exec";

/// Parameters of `exec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecParams {
    /// Program and arguments (`["pg_isready", "-h", "db"]`); with
    /// `shell = true`, a single script.
    pub argv: Vec<String>,
    /// Environment variables added to the program's (values are not logged).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Start from an empty environment (plus `env` and `PATH`).
    #[serde(default)]
    pub env_clear: bool,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Run `argv[0]` as a script with `sh -c`.
    #[serde(default)]
    pub shell: bool,
    /// Exit codes that mean success (default `[0]`).
    #[serde(default = "default_codes")]
    pub success_codes: Vec<i32>,
    /// Bytes of each of stdout and stderr kept (default 64 KiB).
    #[serde(default = "default_capture")]
    pub max_capture: usize,
}

fn default_codes() -> Vec<i32> {
    vec![0]
}
fn default_capture() -> usize {
    64 * 1024
}

/// The `exec` action.
#[derive(Debug, Clone)]
pub struct Exec {
    params: ExecParams,
}

impl Exec {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] with key `exec.argv` for an empty argv, or a
    /// shell script given as several strings.
    pub fn new(params: ExecParams) -> Result<Self> {
        if params.argv.is_empty() || params.argv[0].is_empty() {
            return Err(Error::InvalidConfig {
                key: format!("{NAME}.argv"),
                reason: "argv needs at least the program".into(),
            });
        }
        if params.shell && params.argv.len() != 1 {
            return Err(Error::InvalidConfig {
                key: format!("{NAME}.argv"),
                reason: "with shell = true, argv is one script string".into(),
            });
        }
        if params.max_capture < 64 {
            return Err(Error::InvalidConfig {
                key: format!("{NAME}.max_capture"),
                reason: "at least 64 bytes".into(),
            });
        }
        Ok(Exec { params })
    }

    fn program(&self) -> &str {
        if self.params.shell {
            "sh"
        } else {
            &self.params.argv[0]
        }
    }
}

pub(super) fn register(registry: &mut ActionRegistry) {
    registry.register_typed(NAME, |p: ExecParams| {
        Ok(Arc::new(Exec::new(p)?) as Arc<dyn Action>)
    });
}

async fn capture(mut r: impl AsyncRead + Unpin, limit: usize) -> std::io::Result<BoundedBuffer> {
    let mut buf = BoundedBuffer::new(limit);
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(buf);
        }
        buf.extend(&chunk[..n]);
    }
}

#[async_trait]
impl Action for Exec {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Finds the program (a path, or a name on `PATH`) and checks that it
    /// is executable; runs nothing.
    async fn preflight(&self) -> Result<Preflight> {
        use std::os::unix::fs::PermissionsExt;
        let program = self.program();
        let candidates: Vec<std::path::PathBuf> = if program.contains('/') {
            vec![program.into()]
        } else {
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).map(|d| d.join(program)).collect())
                .unwrap_or_default()
        };
        let found = candidates.into_iter().find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
        match found {
            Some(p) => Ok(Preflight::Reached(format!("program {} found", p.display()))),
            None => Err(Error::NotFound {
                what: format!(
                    "executable program {program:?}{}",
                    if program.contains('/') {
                        ""
                    } else {
                        " on PATH"
                    }
                ),
            }),
        }
    }

    fn describe(&self) -> String {
        let mut s = if self.params.shell {
            format!("run shell script {:?}", self.params.argv[0])
        } else {
            format!("run {:?}", self.params.argv)
        };
        if !self.params.env.is_empty() {
            s.push_str(&format!(
                " with env {}",
                self.params
                    .env
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(cwd) = &self.params.cwd {
            s.push_str(&format!(" in {cwd}"));
        }
        s
    }

    async fn run(&self, _ctx: &ActionContext) -> Result<ActionOutput> {
        let p = &self.params;
        let mut cmd = if p.shell {
            let mut c = tokio::process::Command::new("sh");
            c.arg("-c").arg(&p.argv[0]);
            c
        } else {
            let mut c = tokio::process::Command::new(&p.argv[0]);
            c.args(&p.argv[1..]);
            c
        };
        if p.env_clear {
            cmd.env_clear();
            if let Ok(path) = std::env::var("PATH") {
                cmd.env("PATH", path);
            }
        }
        cmd.envs(&p.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(cwd) = &p.cwd {
            cmd.current_dir(cwd);
        }
        let program = self.program().to_string();
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                what: format!("program {program:?}"),
            },
            std::io::ErrorKind::PermissionDenied => Error::PermissionDenied {
                what: format!("program {program:?}"),
                reason: e.to_string(),
            },
            _ => Error::Failed {
                what: format!("starting {program:?}"),
                source: e.into(),
            },
        })?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (out, err, status) = tokio::try_join!(
            capture(stdout, p.max_capture),
            capture(stderr, p.max_capture),
            child.wait()
        )
        .map_err(|e| Error::Failed {
            what: format!("running {program:?}"),
            source: e.into(),
        })?;
        let (out, err) = (out.to_text(), err.to_text());
        let mut log = String::new();
        if !out.is_empty() {
            log.push_str(&out);
        }
        if !err.is_empty() {
            if !log.is_empty() && !log.ends_with('\n') {
                log.push('\n');
            }
            log.push_str("[stderr]\n");
            log.push_str(&err);
        }
        let code = status.code();
        let ok = code.is_some_and(|c| p.success_codes.contains(&c));
        if !ok {
            let how = match code {
                Some(c) => format!("exited with status {c}"),
                None => "was killed by a signal".to_string(),
            };
            let tail: String = {
                let t = err.trim_end();
                let start = t.len().saturating_sub(400);
                let start = (start..=t.len())
                    .find(|&i| t.is_char_boundary(i))
                    .unwrap_or(t.len());
                t[start..].to_string()
            };
            return Err(Error::Failed {
                what: format!("command {program:?}"),
                source: if tail.is_empty() {
                    how.into()
                } else {
                    format!("{how}; stderr: {tail}").into()
                },
            });
        }
        Ok(ActionOutput {
            summary: format!("{program} exited with status {}", code.unwrap_or_default()),
            state: serde_json::json!({ "exit_code": code, "stdout": out.trim_end() }),
            log,
        })
    }
}
