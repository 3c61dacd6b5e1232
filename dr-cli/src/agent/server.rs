//! `/metrics`, `/health` and `/ready` over HTTP (axum).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use dr_core::metrics::{AgentMetrics, CONTENT_TYPE};

use crate::exit::Usage;

#[derive(Clone)]
struct AppState {
    metrics: Arc<AgentMetrics>,
    ready: Arc<AtomicBool>,
    page: dr_ops::agent::StatusPage,
}

/// The routes: `GET /` (the status page, HTML; 503 before the repository
/// was first read), `GET /metrics` (OpenMetrics text), `GET /health` (200
/// while the process serves), `GET /ready` (200 once the repository was
/// read, 503 before and while shutting down).
pub fn router(
    metrics: Arc<AgentMetrics>,
    ready: Arc<AtomicBool>,
    page: dr_ops::agent::StatusPage,
) -> Router {
    Router::new()
        .route("/", get(page_handler))
        .route("/metrics", get(metrics_handler))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready_handler))
        .with_state(AppState {
            metrics,
            ready,
            page,
        })
}

async fn page_handler(State(s): State<AppState>) -> axum::response::Response {
    let page = s.page.read().ok().and_then(|p| p.clone());
    match page {
        Some(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the repository has not been read yet\n",
        )
            .into_response(),
    }
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], s.metrics.encode())
}

async fn ready_handler(State(s): State<AppState>) -> impl IntoResponse {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Binds `addr`.
///
/// # Errors
/// The address is taken or not allowed, naming it.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Usage::wrap(anyhow::Error::new(e).context(format!("listening on {addr} (agent.listen)")))
    })
}

/// Serves `router` on `listener` until `shutdown` completes.
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
