//! A physical replication connection: socket, startup, authentication and
//! the message loop, on the `postgres-protocol` crate (the message codec and
//! the SCRAM/MD5 exchanges tokio-postgres uses).
//!
//! PostgreSQL 15 docs §55.2 "Message Flow" (start-up) and §55.4 "Streaming
//! Replication Protocol" (`replication=true` in the start-up packet makes the
//! backend a walsender that accepts replication commands over the simple
//! query protocol).

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::{backend, frontend};
use secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::config::Host;

use crate::conn::ConnectionSettings;
use crate::error::ReplicationError;

/// A socket: TCP or Unix.
pub(crate) trait Socket: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Socket for T {}

/// A server message, decoded.
pub(crate) type Message = backend::Message;

/// A physical replication connection (a walsender session).
pub struct ReplicationConnection {
    socket: Box<dyn Socket>,
    read: BytesMut,
    write: BytesMut,
    server: String,
    parameters: HashMap<String, String>,
}

impl std::fmt::Debug for ReplicationConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConnection")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The fields of an `ErrorResponse` that make a message.
pub(crate) struct ServerError {
    pub severity: String,
    pub code: String,
    pub message: String,
}

pub(crate) fn server_error(body: &backend::ErrorResponseBody) -> ServerError {
    let mut e = ServerError {
        severity: String::new(),
        code: String::new(),
        message: String::new(),
    };
    let mut detail = String::new();
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'V' => e.severity = v,
            b'S' if e.severity.is_empty() => e.severity = v,
            b'C' => e.code = v,
            b'M' => e.message = v,
            b'D' => detail = v,
            _ => {}
        }
    }
    if !detail.is_empty() {
        e.message = format!("{} ({detail})", e.message);
    }
    e
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl ReplicationConnection {
    /// Opens a physical replication connection to the server `settings`
    /// reach (TCP, or the Unix socket `<dir>/.s.PGSQL.<port>`), as their
    /// user, with the password from the settings (DSN, `PGPASSWORD`,
    /// `.pgpass`) when the server asks for one. `application_name` shows in
    /// `pg_stat_activity` and `pg_stat_replication`.
    ///
    /// # Errors
    /// [`ReplicationError::Io`] when the server cannot be reached;
    /// [`ReplicationError::Auth`] when it refuses the login (the message
    /// never holds the password).
    pub async fn connect(
        settings: &ConnectionSettings,
        application_name: &str,
    ) -> Result<Self, ReplicationError> {
        let server = settings.server();
        let io = |what: &str| {
            let server = server.clone();
            let what = what.to_string();
            move |source| ReplicationError::Io {
                server: server.clone(),
                what: what.clone(),
                source,
            }
        };
        let connect = async {
            let socket: Box<dyn Socket> = match settings.host() {
                Host::Tcp(h) => {
                    let s = tokio::net::TcpStream::connect((h.as_str(), settings.port()))
                        .await
                        .map_err(io("connecting"))?;
                    let _ = s.set_nodelay(true);
                    Box::new(s)
                }
                Host::Unix(dir) => {
                    let path = dir.join(format!(".s.PGSQL.{}", settings.port()));
                    Box::new(
                        tokio::net::UnixStream::connect(&path)
                            .await
                            .map_err(io(&format!("connecting to {}", path.display())))?,
                    )
                }
            };
            Ok::<_, ReplicationError>(socket)
        };
        let socket = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| ReplicationError::Io {
                server: server.clone(),
                what: "connecting".into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {CONNECT_TIMEOUT:?}"),
                ),
            })??;
        let mut conn = ReplicationConnection {
            socket,
            read: BytesMut::with_capacity(256 * 1024),
            write: BytesMut::with_capacity(1024),
            server,
            parameters: HashMap::new(),
        };
        conn.startup(settings, application_name).await?;
        Ok(conn)
    }

    /// `host:port`, for messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A run-time parameter the server reported at start-up
    /// (`server_version`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// The major version from `server_version` (`15.4 (Debian ...)` -> 15).
    pub fn server_major(&self) -> Option<u32> {
        let v = self.parameter("server_version")?;
        let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    }

    fn protocol(&self, reason: impl Into<String>) -> ReplicationError {
        ReplicationError::Protocol {
            server: self.server.clone(),
            reason: reason.into(),
        }
    }

    fn io_err(&self, what: &str) -> impl Fn(std::io::Error) -> ReplicationError {
        let server = self.server.clone();
        let what = what.to_string();
        move |source| ReplicationError::Io {
            server: server.clone(),
            what: what.clone(),
            source,
        }
    }

    async fn flush(&mut self) -> Result<(), ReplicationError> {
        let buf = self.write.split().freeze();
        self.socket
            .write_all(&buf)
            .await
            .map_err(self.io_err("sending"))?;
        self.socket.flush().await.map_err(self.io_err("sending"))
    }

    /// The next message from the server; `Err` at end of stream.
    pub(crate) async fn next(&mut self) -> Result<Message, ReplicationError> {
        loop {
            if let Some(m) =
                Message::parse(&mut self.read).map_err(|e| self.protocol(e.to_string()))?
            {
                return Ok(m);
            }
            if self.read.capacity() - self.read.len() < 64 * 1024 {
                self.read.reserve(256 * 1024);
            }
            let n = self
                .socket
                .read_buf(&mut self.read)
                .await
                .map_err(self.io_err("receiving"))?;
            if n == 0 {
                return Err(ReplicationError::Io {
                    server: self.server.clone(),
                    what: "receiving".into(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ),
                });
            }
        }
    }

    async fn startup(
        &mut self,
        settings: &ConnectionSettings,
        application_name: &str,
    ) -> Result<(), ReplicationError> {
        let user = settings.user().to_string();
        frontend::startup_message(
            [
                ("user", user.as_str()),
                // A physical walsender; `database` is ignored by it
                // (§55.4), libpq sends `replication` as pg_hba's keyword.
                ("database", "replication"),
                ("replication", "true"),
                ("application_name", application_name),
                ("client_encoding", "UTF8"),
            ],
            &mut self.write,
        )
        .map_err(|e| self.protocol(e.to_string()))?;
        self.flush().await?;
        let auth = |message: String| ReplicationError::Auth {
            server: settings.server(),
            user: user.clone(),
            message,
        };
        let password = || {
            settings
                .password()
                .map(|p| p.expose_secret().as_bytes().to_vec())
                .ok_or_else(|| {
                    auth(
                        "the server asks for a password and none is set (DSN, PGPASSWORD, .pgpass)"
                            .into(),
                    )
                })
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.next().await? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    let p = password()?;
                    frontend::password_message(&p, &mut self.write)
                        .map_err(|e| self.protocol(e.to_string()))?;
                    self.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let p = password()?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        user.as_bytes(),
                        &p,
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.write)
                        .map_err(|e| self.protocol(e.to_string()))?;
                    self.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut has_scram = false;
                    let mut mechanisms = body.mechanisms();
                    while let Some(m) = mechanisms
                        .next()
                        .map_err(|e| self.protocol(e.to_string()))?
                    {
                        has_scram |= m == SCRAM_SHA_256;
                    }
                    if !has_scram {
                        return Err(auth(
                            "the server offers no SASL mechanism this client supports (SCRAM-SHA-256 \
                             without channel binding)"
                                .into(),
                        ));
                    }
                    let p = password()?;
                    let s = ScramSha256::new(&p, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.write)
                        .map_err(|e| self.protocol(e.to_string()))?;
                    scram = Some(s);
                    self.flush().await?;
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| auth("SASL continue before SASL start".into()))?;
                    s.update(body.data())
                        .map_err(|e| auth(format!("SCRAM exchange: {e}")))?;
                    frontend::sasl_response(s.message(), &mut self.write)
                        .map_err(|e| self.protocol(e.to_string()))?;
                    self.flush().await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| auth("SASL final before SASL start".into()))?;
                    s.finish(body.data())
                        .map_err(|e| auth(format!("the server's SCRAM signature: {e}")))?;
                }
                Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential
                | Message::AuthenticationGss
                | Message::AuthenticationSspi
                | Message::AuthenticationGssContinue(_) => return Err(auth(
                    "the server asks for an authentication method this client does not support \
                         (use password, md5, scram-sha-256, trust or peer)"
                        .into(),
                )),
                Message::ParameterStatus(body) => {
                    let name = body
                        .name()
                        .map_err(|e| self.protocol(e.to_string()))?
                        .to_string();
                    let value = body
                        .value()
                        .map_err(|e| self.protocol(e.to_string()))?
                        .to_string();
                    self.parameters.insert(name, value);
                }
                Message::BackendKeyData(_) | Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => {
                    let e = server_error(&body);
                    return Err(auth(format!("{} {}: {}", e.severity, e.code, e.message)));
                }
                _ => return Err(self.protocol("unexpected message during start-up")),
            }
        }
    }

    /// Sends `command` as a simple query (replication commands use it).
    pub(crate) async fn send_query(&mut self, command: &str) -> Result<(), ReplicationError> {
        frontend::query(command, &mut self.write).map_err(|e| self.protocol(e.to_string()))?;
        self.flush().await
    }

    /// Ends the session politely.
    pub async fn close(mut self) {
        frontend::terminate(&mut self.write);
        let _ = self.flush().await;
    }

    /// The error for an `ErrorResponse` to `what`.
    pub(crate) fn command_error(
        &self,
        what: &str,
        body: &backend::ErrorResponseBody,
    ) -> ReplicationError {
        let e = server_error(body);
        ReplicationError::Server {
            what: what.to_string(),
            server: self.server.clone(),
            severity: e.severity,
            code: e.code,
            message: e.message,
        }
    }
}

/// The text columns of a `DataRow` (`None` for NULL).
pub(crate) fn row_values(body: &backend::DataRowBody) -> std::io::Result<Vec<Option<String>>> {
    let buf: &Bytes = body.buffer_bytes();
    body.ranges()
        .map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned())))
        .collect()
}
